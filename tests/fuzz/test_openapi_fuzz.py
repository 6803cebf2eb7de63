"""schemathesis against the hub's own OpenAPI, over real HTTP to a `ketenhub run` process.

Every operation the document lists is called with generated requests, schema-valid (positive) and
schema-invalid (negative), once without credentials and once with valid ones (the partner key of
the endpoint's kind, an active caseworker, an operator session that may do everything). Checks: no
5xx, every answer (status, content type, body) as the document says, and invalid data refused.
An operation that was not exercised fails the run. Bounded by KETENHUB_FUZZ_EXAMPLES (default 15
positive examples per operation with credentials; the other runs scale from it).

An id the fuzzer invents finds nothing: the handler answers 404 after its lookup, and what it does
with what it found is never fuzzed. So the hub is given one of everything an id in a path names
(a referral, consents, a handover, signals with a match, dead letters, a replay job, a mail, mail
problems, caseworkers), made the way the partners, caseworkers and the Verwijsindex make them
(some seconds per store), and part of each operation's cases name one of those (`SEEDED`): half of
what is drawn, where a case that differs in nothing else is sent once. With credentials every GET
with an id in its path must then answer 2xx at least once; without them, nothing is done even to
what exists.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hub.directory.service import upsert_caseworker
from hub.embedded import free_port
from hub.handovers.receivers import ReceiverDelivery, set_receiver_delivery
from hub.notify.problems import record_problem
from hub.ops.auth import add_operator
from hub.partners import PartnerType, add_partner
from hub.store import Store
from hub.topics import POLITIE_REFERRAL
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Caseworker
from schemas.envelope import H_TRANSACTION_ID
from schemas.handover import ReceiverType
from tests.conftest import create_pg_database, drop_pg_database, require_pg
from tests.helpers.kafka import produce
from tests.helpers.partner_records import boa_records, politie_records, preventief_records
from tests.helpers.procs import KETENHUB

# One worker takes the whole module under `make test` (--dist loadgroup): its two hub processes,
# one per store, start once instead of once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900), pytest.mark.xdist_group("fuzz")]
EXAMPLES = int(os.environ.get("KETENHUB_FUZZ_EXAMPLES", "15"))
# Examples per operation for each run: (generation mode, with credentials) -> count. Without
# credentials every answer should be a 401, so fewer examples tell as much; negative cases cost
# more to generate. With the default the file runs in about a minute.
BUDGET = {
    (GenerationMode.POSITIVE, True): EXAMPLES,
    (GenerationMode.NEGATIVE, True): max(1, EXAMPLES * 2 // 3),
    (GenerationMode.POSITIVE, False): max(1, EXAMPLES // 3),
    (GenerationMode.NEGATIVE, False): max(1, EXAMPLES // 7),
}
CASEWORKER = "cw-fuzz"
# The directory's operations that change a caseworker (leaving, absences, a delegate, borging) are
# given this one: changed, the caseworker every caseworker call names would leave the later runs 401s.
OTHER_CASEWORKER = "cw-fuzz-beheer"
RECEIVER = "jeugdhulp-fuzz"  # the jeugdhulp partner: the seeded handover is addressed to it
OPERATOR = ("fuzz-officer", "fuzz-password-that-is-long")
# A fuzzer that logs itself out, or bulk-replays and discards, tests nothing more but undoes the session.
SKIP = {("POST", "/ops/logout")}
# Answered to anyone: health, the documents, the metrics (restricted at the network) and the login.
PUBLIC = {
    *(("GET", path) for path in ("/healthz", "/readyz", "/asyncapi.json", "/asyncapi", "/metrics")),
    ("POST", "/ops/login"),
}


async def _seed(db_url: str) -> tuple[dict[str, str], list[int]]:
    """Before the hub starts: the partners' keys, the caseworkers, the receiver of the seeded
    handover, mail problems and the operator. The partners' keys and the problems' ids."""
    store = Store(db_url)
    await store.migrate()
    keys = {}
    async with store.transaction() as session:
        for kind in PartnerType:
            _, keys[kind.value] = await add_partner(session, f"{kind.value}-fuzz", kind)
        for caseworker_id, name in ((CASEWORKER, "Fuzz Tester"), (OTHER_CASEWORKER, "Fuzz Beheer")):
            await upsert_caseworker(
                session,
                Caseworker(
                    caseworker_id=caseworker_id, name=name, email=f"{caseworker_id}@halt.nl",
                    team="DEN_HAAG", meldingsbevoegd=True,
                ),
            )  # fmt: skip
        # the jeugdhulp partner reads its handovers from its type's topic, and answers them over HTTP
        await set_receiver_delivery(session, ReceiverDelivery(RECEIVER, ReceiverType.JEUGDHULP, "kafka"))
        problems: list[int] = []
        for n in (1, 2):  # problems to list and resolve: their bodies are checked against the document
            problem = await record_problem(
                session, kind="match_overgeslagen", caseworker_id=CASEWORKER, reference=f"m-{n}",
                reason="match overgeslagen op positie 1: type ontbreekt", transaction_id=None,
            )  # fmt: skip
            problems.append(problem)
    await add_operator(store, *OPERATOR, "privacy_officer")
    await store.close()
    return keys, problems


class Running:
    """The hub process and the credentials made for it."""

    def __init__(self, url: str, keys: dict[str, str], cookie: dict[str, str]) -> None:
        self.url, self.keys, self.cookie = url, keys, cookie
        # operation -> the path parameters that name what the hub holds (`_seed_objects`)
        self.seeded: dict[tuple[str, str], dict[str, Any]] = {}

    def headers_for(self, path: str) -> dict[str, str]:
        kind = path.split("/")[3] if path.startswith("/api/v1/") else ""
        if path == "/api/v1/overdrachten/{handover_id}/status":
            kind = "jeugdhulp"  # a receiver answers a handover: any other key is refused (403) first
        elif kind in ("signalen", "toestemmingen", "overdrachten", "zorgmeldingen"):
            kind = "zaaksysteem"  # the caseworker API: the case system's key and the caseworker it names
        key = self.keys.get(kind, self.keys["politie"])
        return {"Authorization": f"Bearer {key}", "X-Medewerker": CASEWORKER}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The hub process on each store: PostgreSQL refuses what SQLite keeps (a NUL in text, say)."""
    workdir = tmp_path_factory.mktemp("fuzz")
    pg_name = None
    if request.param == "sqlite":
        db_url = f"sqlite+aiosqlite:///{workdir / 'ketenhub.db'}"
    else:
        asyncio.run(require_pg())
        pg_name = f"kh_fuzz_{uuid.uuid4().hex[:10]}"
        db_url = asyncio.run(create_pg_database(pg_name))
    try:
        keys, problems = asyncio.run(_seed(db_url))
    except BaseException:
        if pg_name is not None:  # the database is dropped whenever the hub never started on it
            asyncio.run(drop_pg_database(pg_name))
        raise
    port = free_port()
    log = (workdir / "hub.log").open("wb")
    proc = subprocess.Popen(
        [KETENHUB, "run", "--port", str(port)], cwd=workdir, stdout=log, stderr=log,
        env={**os.environ, "KETENHUB_LOG_LEVEL": "WARNING", "KETENHUB_DATABASE__URL": db_url},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, (workdir / "hub.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError(
                "the hub was not ready within 90 s: " + (workdir / "hub.log").read_text()[-3000:]
            )
        login = httpx.post(url + "/ops/login", json={"username": OPERATOR[0], "password": OPERATOR[1]})
        assert login.status_code == 200, login.text
        hub = Running(url, keys, dict(login.cookies))
        hub.seeded = _seed_objects(hub, workdir / "hub.log", problems)
        yield hub
        assert proc.poll() is None, "the hub died under the fuzzer"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if pg_name is not None:
            asyncio.run(drop_pg_database(pg_name))


# Every operation with an id in its path, and the seeded object it is given (`_seed_objects`). One
# that changes what it finds gets an object of its own, so that a withdrawal, a discard or a replay
# leaves the reads something to find; the reads share one of each.
SEEDED: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/verwijzingen/{referral_id}"): "referral",
    ("GET", "/ops/api/dlq/{letter_id}"): "letter",
    ("POST", "/ops/api/dlq/{letter_id}/discard"): "letter to discard",
    ("POST", "/ops/api/dlq/{letter_id}/replay"): "letter to replay",
    ("GET", "/ops/api/jobs/{job_id}"): "replay job",
    ("POST", "/ops/api/signals/{signal_id}/register-again"): "signal to register again",
    ("GET", "/api/v1/signalen/{signal_id}"): "signal",
    ("POST", "/api/v1/signalen/{signal_id}/intrekking"): "signal to withdraw",
    ("PATCH", "/api/v1/signalen/{signal_id}/contactpersoon"): "signal to hand over",
    ("GET", "/api/v1/signalen/{signal_id}/matches"): "signal",
    ("GET", "/api/v1/signalen/{signal_id}/ouderbrief"): "signal",
    ("GET", "/api/v1/toestemmingen/{consent_id}"): "consent",
    ("POST", "/api/v1/toestemmingen/{consent_id}/intrekking"): "consent to withdraw",
    ("GET", "/api/v1/overdrachten/{handover_id}"): "handover",
    ("POST", "/api/v1/overdrachten/{handover_id}/status"): "handover",  # its receiver answers it
    ("POST", "/api/v1/medewerkers/problemen/{problem_id}/oplossing"): "problem",
    ("GET", "/api/v1/medewerkers/{caseworker_id}"): "caseworker",
    ("PUT", "/api/v1/medewerkers/{caseworker_id}"): "caseworker to change",
    ("POST", "/api/v1/medewerkers/{caseworker_id}/afwezigheden"): "caseworker to change",
    ("DELETE", "/api/v1/medewerkers/{caseworker_id}/afwezigheden"): "caseworker to change",
    ("PUT", "/api/v1/medewerkers/{caseworker_id}/vervanger"): "caseworker to change",
    ("POST", "/api/v1/medewerkers/{caseworker_id}/borging"): "caseworker to change",
    ("GET", "/api/v1/mails/{mail_id}"): "mail",
}
# A GET with an id in its path that cannot answer 2xx to the fuzzer even for a seeded object, and
# why; none so far.
NO_2XX_POSSIBLE: dict[tuple[str, str], str] = {}
SEED_WAIT_S = 60.0  # for what the hub does in the background: a delivery, a match, a mail, a dead letter


def _waited(what: str, probe: Callable[[], Any], timeout_s: float = SEED_WAIT_S) -> Any:
    """`probe()`'s first answer that is not None (nor empty), polled until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (found := probe()):
        assert time.monotonic() < deadline, f"seeding: no {what} within {timeout_s:g} s"
        time.sleep(0.2)
    return found


def _from_banner(log: Path, pattern: str) -> str:
    """A value from the banner `ketenhub run` prints once it listens (the broker's, the Verwijsindex
    simulator's address), read from its log."""
    found = _waited(pattern, lambda: re.search(pattern, log.read_text(errors="replace")), 20)
    return str(found[1])


def _born(years: int, today: date) -> date:
    """A birth date of someone `years` old today, and for a few months more."""
    return date(today.year - years, 1, 1) if today.month > 6 else date(today.year - years - 1, 7, 1)


def _bsns() -> Iterator[str]:
    """Valid BSNs (rule 1), each youth of the seeding its own."""
    return (bsn for bsn in map("{:09d}".format, itertools.count(123_450_000)) if is_valid_bsn(bsn))


class _Seeding:
    """Makes the seeded objects through the running hub, as its users make them."""

    def __init__(self, hub: Running, client: httpx.Client) -> None:
        self.hub, self.client = hub, client
        self.today = datetime.now(UTC).date()
        self.bsns = _bsns()

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        """The JSON answer to a call with the credentials the fuzzer uses for `path`."""
        answer = self.client.request(method, path, headers=self.hub.headers_for(path), **kwargs)
        assert answer.status_code == expect, f"seeding: {method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def referral(self) -> str:
        """A police referral over HTTP, accepted: a youth of 17 who confessed and agreed."""
        today = self.today
        record = {
            "procesVerbaalNummer": "PL1500-2026000001-1",
            "verbalisant": {"naam": "Agent Visser"},
            "feitcode": "F310",
            "pleegdatum": (today - timedelta(days=10)).isoformat(),
            "verdachte": {
                "bsn": next(self.bsns), "voornamen": "Noah", "achternaam": "Jansen",
                "geboortedatum": _born(17, today).isoformat(), "geslacht": "M", "gemeente": "Den Haag",
            },
            "wettelijkVertegenwoordigers": [],
            "bekennend": True,
            "jeugdigeAkkoord": True,
            "eerdereHaltverwijzingen": 0,
            "ovjToestemming": True,
        }  # fmt: skip
        answer = self.call("POST", "/api/v1/politie/verwijzingen", 201, json=record)
        assert answer["status"] == "ACCEPTED", answer
        return str(answer["referralId"])

    def consent(self, referral: str, purpose: str) -> str:
        """The youth's consent (at 17 theirs alone, rule 8) to share with the jeugdhulp partner."""
        grantor = {"role": "JEUGDIGE", "name": "Noah", "permission": "PERMIT",
                   "given_at": datetime.now(UTC).isoformat(), "method": "MONDELING"}  # fmt: skip
        body = {
            "referral_id": referral,
            "purpose": purpose,
            "recipient_organisations": [RECEIVER],
            "data_categories": ["PERSONALIA", "VERWIJZING", "HULPVRAAG"],
            "grantors": [grantor],
            "valid_from": (self.today - timedelta(days=1)).isoformat(),
            "valid_until": (self.today + timedelta(days=365)).isoformat(),
        }
        return str(self.call("POST", "/api/v1/toestemmingen", 201, json=body)["consent_id"])

    def sent_handover(self, referral: str) -> str:
        """A handover to the jeugdhulp partner, once it went out under its consent (rule 9): then
        the receiver may answer it."""
        body = {
            "referral_id": referral,
            "receiver_organisation": RECEIVER,
            "data_categories": ["PERSONALIA", "VERWIJZING"],
            "summary": "Noah wil graag meedoen aan een sportproject.",
        }
        handover = str(self.call("POST", "/api/v1/overdrachten", 202, json=body)["handover_id"])

        def sent() -> dict[str, Any] | None:
            found: dict[str, Any] = self.call("GET", f"/api/v1/overdrachten/{handover}", 200)
            return found if found["sent_at"] is not None else None

        assert _waited("handover sent", sent)["status"] == "VERZONDEN"
        return handover

    def signal(self, bsn: str) -> str:
        """The caseworker's signal on a youth of 15 who was told, as were the parents (rule 14)."""
        youth = {"bsn": bsn, "given_names": "Sanne", "surname": "de Vries", "gender": "VROUW",
                 "birth_date": _born(15, self.today).isoformat(), "municipality": "Den Haag"}  # fmt: skip
        informed = self.today.isoformat()
        body = {"youth": youth, "youth_informed_at": informed, "parent_letter_sent_at": informed}
        return str(self.call("POST", "/api/v1/signalen", 201, json=body)["signal_id"])

    def matched_signal_and_mail(self, log: Path) -> tuple[str, int]:
        """A signal the Verwijsindex holds, and another organisation's on the same youth registered
        there: a client match on the signal, and its mail to the caseworker in the embedded sink."""
        bsn = next(self.bsns)
        signal = self.signal(bsn)

        def delivered() -> str | None:
            return self.call("GET", f"/api/v1/signalen/{signal}", 200)["delivery"]["delivered_at"]

        _waited("signal delivered to the Verwijsindex", delivered)
        registration = {
            "jeugdige": {"bsn": bsn, "voornamen": "Sanne", "voorvoegsel": "de", "geslachtsnaam": "Vries",
                         "geboortedatum": _born(15, self.today).isoformat(), "geslacht": "VROUW",
                         "gemeente": "Den Haag"},
            "organisatie": {"code": "wijkteam-fuzz", "naam": "Wijkteam Fuzz"},
            "contactpersoon": {"naam": "Wim Wijkteam", "email": "wim@wijkteam.example"},
            "aangemaakt": self.today.isoformat(),
            "einddatum": (self.today + timedelta(days=180)).isoformat(),
        }  # fmt: skip
        index = _from_banner(log, r"verwijsindex\s+(\S+)/docs")
        put = httpx.put(
            f"{index}/api/v1/signalen/{uuid.uuid4()}", json=registration,
            headers={"Fsc-Transaction-Id": str(uuid.uuid4())}, timeout=30,
        )  # fmt: skip
        assert put.status_code == 201, put.text
        _waited("match", lambda: self.call("GET", f"/api/v1/signalen/{signal}/matches", 200))

        def mail() -> int | None:
            mails = self.call("GET", "/api/v1/mails", 200)["mails"]
            return next((m["id"] for m in mails if f"{CASEWORKER}@halt.nl" in m["to"]), None)

        return signal, int(_waited("match mail", mail))

    def dead_letters(self, log: Path, count: int) -> list[str]:
        """Records on the police topic that are no JSON at all: the intake refuses them for good."""
        poison = [
            (None, b"\x00fuzz-%d" % n, [(H_TRANSACTION_ID, f"tx-fuzz-{n}".encode())]) for n in range(count)
        ]
        asyncio.run(produce(_from_banner(log, r"broker\s+(\S+) \(embedded"), POLITIE_REFERRAL.name, poison))

        def listed() -> list[str] | None:
            items = self.call("GET", "/ops/api/dlq", 200)["items"]
            ids = [d["id"] for d in items if d["original_topic"] == POLITIE_REFERRAL.name]
            return ids if len(ids) == count else None

        return list(_waited("dead letters of the poison", listed))


def _seed_objects(hub: Running, log: Path, problems: list[int]) -> dict[tuple[str, str], dict[str, Any]]:
    """What the ids in the document's paths name, made through the hub as its users make it: a
    police referral over HTTP, consents and a handover by the caseworker, signals, one of them
    matched by another organisation in the Verwijsindex, and dead letters of poison on the police
    topic. Operation -> the path parameters naming its object (`SEEDED`)."""
    with httpx.Client(base_url=hub.url, timeout=30, cookies=hub.cookie) as client:
        seeding = _Seeding(hub, client)
        referral = seeding.referral()
        objects: dict[str, Any] = {
            "referral": referral,
            "consent": seeding.consent(referral, "WARME_OVERDRACHT"),
            # another purpose: its withdrawal leaves the handover under the first as it stands
            "consent to withdraw": seeding.consent(referral, "DELEN_NA_MATCH"),
            "problem": problems[0],
            "caseworker": CASEWORKER,
            "caseworker to change": OTHER_CASEWORKER,
        }
        for name in ("signal to register again", "signal to withdraw", "signal to hand over"):
            objects[name] = seeding.signal(next(seeding.bsns))
        letter, to_discard, to_replay, replayed = seeding.dead_letters(log, 4)
        objects |= {"letter": letter, "letter to discard": to_discard, "letter to replay": to_replay}
        objects["replay job"] = seeding.call("POST", f"/ops/api/dlq/{replayed}/replay", 200)["id"]
        objects["handover"] = seeding.sent_handover(referral)
        objects["signal"], objects["mail"] = seeding.matched_signal_and_mail(log)
    seeded = {}
    for (method, template), name in SEEDED.items():
        [parameter] = re.findall(r"\{(\w+)\}", template)
        seeded[method, template] = {parameter: objects[name]}
    return seeded


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# Partner formats are parsed leniently at the edge and a document cannot say everything the parser
# checks (a date that exists on the calendar, an elfproef BSN): such a schema-valid request gets a
# documented 400 with the field named, which is right, so "schema-valid data must be accepted" is
# not asked. Every other check is: no 5xx, status codes, content types and bodies as documented,
# and schema-invalid data refused.
EXCLUDED = [positive_data_acceptance]


class Fuzzed:
    """What one run did: the requests sent per operation, the statuses answered to those that named a
    seeded object, the operations with nothing to negate, and what failed."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, str], int] = {}
        self.seeded_answers: defaultdict[tuple[str, str], Counter[int]] = defaultdict(Counter)
        self.nothing_to_negate: set[tuple[str, str]] = set()
        self.failed: list[str] = []


def _fuzz(running: Running, *, mode: GenerationMode, credentials: bool) -> Fuzzed:
    """Every operation of the document with generated cases of one mode."""
    schema = schemathesis.openapi.from_url(running.url + "/openapi.json")
    fuzzed = Fuzzed()
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key not in SKIP:
            _fuzz_operation(running, operation, key, fuzzed, mode=mode, credentials=credentials)
    return fuzzed


def _fuzz_operation(
    running: Running,
    operation: Any,
    key: tuple[str, str],
    fuzzed: Fuzzed,
    *,
    mode: GenerationMode,
    credentials: bool,
) -> None:
    fuzzed.sent[key] = 0
    # Credentials are fixed parts of the case, so a negative case never "removes" a header that the
    # call then puts back.
    if credentials:
        fixed: dict[str, Any] = {"headers": running.headers_for(operation.path), "cookies": running.cookie}
    else:
        fixed = {"headers": {"Authorization": "", "X-Medewerker": ""}}

    checks = [] if credentials or key in PUBLIC else [_nothing_done_without_credentials]
    strategy = operation.as_strategy(generation_mode=mode, **fixed)
    seeded = running.seeded.get(key)
    if seeded is not None:
        # About half the cases name what the hub holds; a negative one then has its invalid data
        # elsewhere (the path is given), and where nothing else can be invalid it is not drawn.
        strategy = st.one_of(
            strategy, operation.as_strategy(generation_mode=mode, path_parameters=seeded, **fixed)
        )

        seeded_as_sent = {k: str(v) for k, v in seeded.items()}

        def answered(ctx: Any, response: Any, case: Any) -> None:
            # as sent: quoted for the path ("a:0:1" is "a%3A0%3A1")
            if {k: unquote(str(v)) for k, v in case.path_parameters.items()} == seeded_as_sent:
                fuzzed.seeded_answers[key][response.status_code] += 1

        checks = [*checks, answered]

    @given(case=strategy)
    @_settings(BUDGET[mode, credentials])
    def run(case: Any) -> None:
        fuzzed.sent[key] += 1
        case.call_and_validate(
            base_url=running.url, allow_redirects=False, excluded_checks=EXCLUDED, additional_checks=checks
        )

    try:
        run()
    except Unsatisfiable:
        # Only a request body is sure to have something invalid to send; a lone string parameter
        # in the path or the query has not.
        if mode is not GenerationMode.NEGATIVE or _has_body(operation):
            fuzzed.failed.append(f"{key[0]} {key[1]}: no {mode.value} case could be generated")
        fuzzed.nothing_to_negate.add(key)
    except (Exception, BaseExceptionGroup) as exc:
        # schemathesis raises what its checks found as a FailureGroup, which is no Exception: caught
        # here too, each operation's failures are listed and the run goes on to the next operation.
        fuzzed.failed.append(f"{key[0]} {key[1]}: {str(exc)[:1500]}")


def _nothing_done_without_credentials(ctx: Any, response: Any, case: Any) -> bool | None:
    """No success without credentials. The operators' session cookie is no security scheme of the
    document, so schemathesis's own check of ignored authentication cannot see an operator endpoint
    that skipped it: a 200 is a documented answer there."""
    if 200 <= response.status_code < 300:
        raise AssertionError(
            f"{case.operation.method.upper()} {case.operation.path} answered {response.status_code}"
            " without credentials"
        )
    return None


def _session_still_works(running: Running) -> None:
    """The runs share one hub, one operator session and one caseworker: a fuzzed call that ended the
    session or made the caseworker inactive would leave the later runs nothing but 401s, and they
    would pass."""
    me = httpx.get(running.url + "/ops/api/me", cookies=running.cookie)
    assert me.status_code == 200, me.text
    path = "/api/v1/toestemmingen"
    listed = httpx.get(running.url + path, headers=running.headers_for(path), params={"youth_key": "ab" * 32})
    # past the case system's key and an active caseworker, to the youth no referral names
    assert (listed.status_code, listed.json()["title"]) == (404, "Jeugdige niet gevonden"), listed.text


def _has_body(operation: Any) -> bool:
    return bool(operation.definition.raw.get("requestBody"))


def _document_operations(running: Running) -> set[tuple[str, str]]:
    paths = httpx.get(running.url + "/openapi.json").json()["paths"]
    methods = {"get", "put", "post", "patch", "delete"}
    return {(m.upper(), path) for path, item in paths.items() for m in item if m in methods}


@pytest.mark.parametrize("credentials", [False, True], ids=["without-credentials", "with-credentials"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_every_operation_answers_as_documented_and_never_5xx(
    running: Running, mode: GenerationMode, credentials: bool
) -> None:
    fuzzed = _fuzz(running, mode=mode, credentials=credentials)
    assert not fuzzed.failed, "\n\n".join(fuzzed.failed)
    if credentials:
        _session_still_works(running)
    # Every operation of the document was exercised: a new endpoint is fuzzed without being listed.
    expected = _document_operations(running) - SKIP
    assert set(fuzzed.sent) == expected
    idle = sorted(k for k, n in fuzzed.sent.items() if n == 0 and k not in fuzzed.nothing_to_negate)
    assert not idle, f"operations not exercised: {idle}"
    if mode is GenerationMode.POSITIVE:
        assert not fuzzed.nothing_to_negate
    # Every operation with an id in its path is given a seeded one: a new one is added to SEEDED.
    with_ids = {k for k in expected if "{" in k[1]}
    assert set(running.seeded) == with_ids, (
        sorted(with_ids - set(running.seeded)),
        sorted(set(running.seeded) - with_ids),
    )
    if mode is GenerationMode.POSITIVE and credentials:
        unnamed = sorted(k for k in running.seeded if not fuzzed.seeded_answers[k])
        assert not unnamed, f"no case named the seeded object: {unnamed}"
        # Past the lookup: every read of a seeded object was answered 2xx at least once. Fails when
        # the seeding no longer makes what the ids name, or a read stopped finding it.
        reads = {k for k in running.seeded if k[0] == "GET"}
        assert set(NO_2XX_POSSIBLE) <= reads  # a stale exception fails too
        missed = {
            f"{k[0]} {k[1]}": dict(fuzzed.seeded_answers[k])
            for k in sorted(reads - set(NO_2XX_POSSIBLE))
            if not any(200 <= status < 300 for status in fuzzed.seeded_answers[k])
        }
        assert not missed, f"reads of seeded objects never answered 2xx (status: count): {missed}"


def test_the_document_covers_every_partner_caseworker_and_operator_endpoint(running: Running) -> None:
    """The document is where the fuzzer finds its operations: it must list the hub's endpoints."""
    operations = _document_operations(running)
    for needed in (
        ("POST", "/api/v1/politie/verwijzingen"),
        ("POST", "/api/v1/boa/verwijzingen"),
        ("POST", "/api/v1/preventief/verwijzingen"),
        ("POST", "/api/v1/leerplicht/verwijzingen"),
        ("POST", "/api/v1/signalen"),
        ("POST", "/api/v1/toestemmingen"),
        ("POST", "/api/v1/overdrachten"),
        ("GET", "/api/v1/medewerkers"),
        ("GET", "/ops/api/dlq"),
    ):
        assert needed in operations
    assert operations >= SKIP  # a skipped operation that no longer exists is a stale exception


def test_partner_referral_bodies_are_documented_by_the_partner_format(running: Running) -> None:
    """Generated bodies follow each partner's own format, so they reach the parser's field checks."""
    paths = httpx.get(running.url + "/openapi.json").json()["paths"]
    for partner, field in (("politie", "procesVerbaalNummer"), ("boa", "bonnummer"),
                           ("preventief", "aanmeldnummer")):  # fmt: skip
        body = paths[f"/api/v1/{partner}/verwijzingen"]["post"]["requestBody"]["content"]["application/json"]
        assert field in body["schema"]["required"]
        assert body["schema"]["additionalProperties"] is False
        assert "$ref" not in str(body)


def test_every_operation_that_reads_a_body_documents_it(running: Running) -> None:
    """A body the handler reads itself is invisible to the fuzzer unless documented by hand: the
    consent and directory-import bodies were not, and a FHIR body that was a JSON string answered 500."""
    paths = httpx.get(running.url + "/openapi.json").json()["paths"]
    bodiless = {
        (method.upper(), path)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in {"post", "put", "patch"} and "requestBody" not in operation
    }
    assert bodiless == {  # these take no body at all
        ("POST", "/ops/logout"),
        ("POST", "/ops/api/dlq/{letter_id}/replay"),
        ("POST", "/ops/api/signals/{signal_id}/register-again"),
        ("POST", "/api/v1/medewerkers/{caseworker_id}/borging"),
    }
    consent = paths["/api/v1/toestemmingen"]["post"]["requestBody"]["content"]
    assert set(consent) == {"application/json", "application/fhir+json"}
    assert "$ref" not in str(consent) and "purpose" in consent["application/json"]["schema"]["properties"]
    assert "text/csv" in paths["/api/v1/medewerkers/import"]["post"]["requestBody"]["content"]


@pytest.mark.parametrize(
    ("partner", "records"),
    [("politie", politie_records), ("boa", boa_records), ("preventief", preventief_records)],
)
def test_valid_partner_referrals_reach_the_intake_and_are_answered_as_documented(
    running: Running, partner: str, records: Any
) -> None:
    """The fuzzer's schema-valid bodies seldom pass what the document cannot say (an elfproef BSN, a
    date on the calendar): each is refused with a documented 400 before the intake decides, stores or
    answers anything. Here every body is a valid partner record, so those run: each is answered 201
    (200 for a repeat) with a body as the document says, never a 5xx."""
    path = f"/api/v1/{partner}/verwijzingen"
    operation = schemathesis.openapi.from_url(running.url + "/openapi.json")[path]["POST"]
    statuses: Counter[int] = Counter()
    youth_of: dict[str, str] = {}  # a case reference, and the youth it was first sent for

    @given(drawn=records())
    @_settings(EXAMPLES)
    def post(drawn: Any) -> None:
        answer = httpx.post(
            running.url + path, json=drawn.record, headers=running.headers_for(path), timeout=30
        )
        statuses[answer.status_code] += 1
        reference, youth = drawn.facts["case_reference"], drawn.facts["youth.bsn"]
        # rule 7: a reference sent before is a repeat (200), or, for another youth, refused (409)
        expected = 201 if reference not in youth_of else 200 if youth_of[reference] == youth else 409
        youth_of.setdefault(reference, youth)
        assert answer.status_code == expected, answer.text
        operation.validate_response(answer)

    post()
    assert statuses[201] >= 1, statuses  # taken in and decided, not refused at the edge
