"""schemathesis against the hub's own OpenAPI, over real HTTP to a `ketenhub run` process.

Every operation the document lists is called with generated requests, schema-valid (positive) and
schema-invalid (negative), once without credentials and once with valid ones (the partner key of
the endpoint's kind, an active caseworker, an operator session that may do everything). Checks: no
5xx, every answer (status, content type, body) as the document says, and invalid data refused.
An operation that was not exercised fails the run. Bounded by KETENHUB_FUZZ_EXAMPLES (default 15
positive examples per operation with credentials; the other runs scale from it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hub.directory.service import upsert_caseworker
from hub.embedded import free_port
from hub.notify.problems import record_problem
from hub.ops.auth import add_operator
from hub.partners import PartnerType, add_partner
from hub.store import Store
from schemas.caseworker import Caseworker
from tests.conftest import create_pg_database, drop_pg_database, require_pg
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
OPERATOR = ("fuzz-officer", "fuzz-password-that-is-long")
# A fuzzer that logs itself out, or bulk-replays and discards, tests nothing more but undoes the session.
SKIP = {("POST", "/ops/logout")}
# Answered to anyone: health, the documents, the metrics (restricted at the network) and the login.
PUBLIC = {
    *(("GET", path) for path in ("/healthz", "/readyz", "/asyncapi.json", "/asyncapi", "/metrics")),
    ("POST", "/ops/login"),
}


async def _seed(db_url: str) -> dict[str, str]:
    store = Store(db_url)
    await store.migrate()
    keys = {}
    async with store.transaction() as session:
        for kind in PartnerType:
            _, keys[kind.value] = await add_partner(session, f"{kind.value}-fuzz", kind)
        await upsert_caseworker(
            session,
            Caseworker(
                caseworker_id=CASEWORKER, name="Fuzz Tester", email="fuzz@halt.nl", team="DEN_HAAG",
                meldingsbevoegd=True,
            ),
        )  # fmt: skip
        for n in (1, 2):  # problems to list and resolve: their bodies are checked against the document
            await record_problem(
                session, kind="match_overgeslagen", caseworker_id=CASEWORKER, reference=f"m-{n}",
                reason="match overgeslagen op positie 1: type ontbreekt", transaction_id=None,
            )  # fmt: skip
    await add_operator(store, *OPERATOR, "privacy_officer")
    await store.close()
    return keys


class Running:
    """The hub process and the credentials made for it."""

    def __init__(self, url: str, keys: dict[str, str], cookie: dict[str, str]) -> None:
        self.url, self.keys, self.cookie = url, keys, cookie

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
        keys = asyncio.run(_seed(db_url))
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
        yield Running(url, keys, dict(login.cookies))
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
    """What one run did: the requests sent per operation, the operations with nothing to negate,
    and what failed."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, str], int] = {}
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

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
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
    except Exception as exc:
        fuzzed.failed.append(f"{key[0]} {key[1]}: {str(exc)[:600]}")


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
