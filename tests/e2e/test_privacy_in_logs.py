"""`ketenhub run` says no BSN and no youth name on its console (stdout and stderr) or in /metrics, on
every path a partner's values take through it: referrals over HTTP (taken in, repeated, in conflict,
and malformed in the ways partners get them wrong), police records on Kafka that are dead-lettered,
signals that a failing Verwijsindex answers with an error quoting them, a feed entry of the index that
breaks its contract, and a match whose mail finds the mail server down.

Each path has a youth of its own, so a leak names the path it took. The output is searched for each
BSN also with a separator between its digits (`314 159 265`, `3141.59.265`) and for each name in any
case. The hub runs at its default log level and at DEBUG (the SQLite driver logged every statement's
values there), with its embedded broker and SQLite store."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.clock import local_day
from hub.directory import upsert_caseworker
from hub.embedded import free_port
from hub.partners import PartnerType, add_partner
from hub.store import Store
from schemas.bsn import is_valid_bsn
from schemas.caseworker import Caseworker
from schemas.envelope import Envelope, utcnow
from tests.helpers.http import serving
from tests.helpers.kafka import produce, wait_for

pytestmark = pytest.mark.e2e
KETENHUB = str(Path(sys.executable).with_name("ketenhub"))
DATA = Path(__file__).resolve().parents[1] / "data"
POLITIE_TOPIC, RECEIVED_TOPIC = "partner.politie.referral.v1", "referral.received.v1"
# Below the default (1,000,000): the oversize bodies (thousands of names and BSNs) stay small.
BODY_LIMIT = 65_536


@dataclass(frozen=True)
class Youth:
    """One youth's identifying values, and the path they are sent along."""

    path: str
    bsn: str
    given_names: str
    surname: str

    def names(self) -> list[str]:
        return [*self.given_names.split(), *self.surname.split()]

    def bsn_pattern(self) -> re.Pattern[str]:
        """Its 9 digits (or 8, without a leading zero), with or without a separator between any two."""
        digits = [self.bsn, self.bsn[1:]] if self.bsn.startswith("0") else [self.bsn]
        return re.compile("|".join(r"[\s.,\-_/]?".join(form) for form in digits))


# BSNs from mathematical and physical constants, valid (rule 1) except where a path needs one that is
# not; names that no text of the hub holds, nor a dictionary.
HTTP_VALID = Youth("HTTP: taken in, and repeated", "314159265", "Oswaldus Ferdinand", "Kwakkelstein")
HTTP_CONFLICT = Youth("HTTP: a case reference in use", "271828183", "Brunhilde", "Vlasbloem")
HTTP_ELFPROEF = Youth("HTTP: fails the elfproef", "161803399", "Gerolfina", "Zwaluwstaart")
HTTP_TYPES = Youth("HTTP: BSN a number, names no text", "141421356", "Quintijn", "Brakkenhoff")
HTTP_UNKNOWN = Youth("HTTP: unknown fields, named by values", "173205082", "Ottoline", "Sprokkelmans")
HTTP_BROKEN = Youth("HTTP: broken JSON", "223606790", "Wendelmoet", "Ruysdaelhof")
HTTP_OVERSIZE = Youth("HTTP: a body over the limit", "120205695", "Fokeltje", "Klaverkamp")
HTTP_TWICE = Youth("HTTP: a key named twice", "138064908", "Isebrandt", "Pannekoekhuis")
HTTP_SEPARATED = Youth("HTTP: a BSN with separators", "091093831", "Tjitskeline", "Schimmelwoud")
HTTP_GLUED = Youth("HTTP: a BSN glued to letters", "083144626", "Radboudine", "Knotwilgen")
HTTP_REFUSED = Youth("HTTP: bad key, other key, bad type", "057721567", "Sjoerdina", "Ooievaarsnest")
HTTP_URL = Youth("HTTP: BSN and names in a URL", "069314718", "Lambertha", "Hunebedder")
BOA_NUMBER = Youth("HTTP BOA: the BSN a JSON number", "046692010", "Everhardus", "Zilvermeeuw")
PREVENTIEF = Youth("HTTP preventief: taken in", "026854521", "Dideriek", "Krentenbollen")
CSV_VALID = Youth("HTTP leerplicht: a row taken in", "299792456", "Aleidis", "Mosselbankers")
CSV_BAD = Youth("HTTP leerplicht: a row refused", "667408318", "Rombout", "Vuurtorenwacht")
KAFKA_VALID = Youth("Kafka police: taken in", "160217660", "Geertruida", "Wolkenschuiver")
KAFKA_ELFPROEF = Youth("Kafka police: elfproef, names as tx id", "602214076", "Hildebrand", "Duifhuizen")
KAFKA_BROKEN = Youth("Kafka police: broken JSON, BSN as key", "964853322", "Barbertje", "Klompenmaker")
KAFKA_TYPES = Youth("Kafka police: wrong types", "177245384", "Machteld", "Ganzenveer")
KAFKA_CANONICAL = Youth("Kafka: a canonical non-Referral", "529177213", "Aldegonde", "Sluiswachter")
INDEX_DOWN = Youth("Verwijsindex: 503 quoting the signal", "135792460", "Hesseltje", "Molenwiekers")
INDEX_REFUSES = Youth("Verwijsindex: 400 quoting the signal", "192837461", "Tsjalling", "Paddenstoelen")
SIGNAL_LEAKY = Youth("signal API: a field off the whitelist", "564738293", "Wopkeline", "Dijkgravin")
MATCHED = Youth("Verwijsindex match, mail server down", "662607016", "Fenneline", "Reigersbosch")
FEED_BROKEN = Youth("Verwijsindex: a feed entry quoting a youth", "161803398", "Jurriaantje", "Kievitsbloem")
YOUTHS = [
    HTTP_VALID, HTTP_CONFLICT, HTTP_ELFPROEF, HTTP_TYPES, HTTP_UNKNOWN, HTTP_BROKEN, HTTP_OVERSIZE,
    HTTP_TWICE, HTTP_SEPARATED, HTTP_GLUED, HTTP_REFUSED, HTTP_URL, BOA_NUMBER, PREVENTIEF, CSV_VALID,
    CSV_BAD, KAFKA_VALID, KAFKA_ELFPROEF, KAFKA_BROKEN, KAFKA_TYPES, KAFKA_CANONICAL, INDEX_DOWN,
    INDEX_REFUSES, SIGNAL_LEAKY, MATCHED, FEED_BROKEN,
]  # fmt: skip
INVALID = (HTTP_ELFPROEF, CSV_BAD, KAFKA_ELFPROEF)


def leaks(text: str) -> Iterator[str]:
    """Every youth value in `text`, with the path it was sent along and what stands around it."""
    lowered = text.lower()
    for youth in YOUTHS:
        spans = [(m.start(), m.end(), f"BSN {youth.bsn}") for m in youth.bsn_pattern().finditer(text)]
        for name in youth.names():
            if (at := lowered.find(name.lower())) != -1:
                spans.append((at, at + len(name), f"name {name!r}"))
        for start, end, what in spans:
            yield f"{what} ({youth.path}): ...{text[max(start - 150, 0) : end + 50]!r}"


@pytest.fixture
async def index() -> AsyncIterator[int]:
    """A Verwijsindex that fails each signal with an answer quoting it; its feed has a match."""
    async with serving(index_app(refuses=INDEX_REFUSES.bsn, matched=MATCHED.bsn)) as port:
        yield port


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])  # the default; the most an operator may set
async def test_no_bsn_or_youth_name_on_the_console_or_in_metrics(
    tmp_path: Path, index: int, level: str
) -> None:
    console, metrics = await console_and_metrics(tmp_path, index, KETENHUB_LOG_LEVEL=level)
    found = [*leaks(console), *(f"/metrics: {leak}" for leak in leaks(metrics))]
    assert not found, "\n".join(found)


async def console_and_metrics(workdir: Path, index: int, **env: str) -> tuple[str, str]:
    """All `ketenhub run` said from start to stop, and its /metrics once every path was taken; `env`
    adds settings (its store is ./ketenhub.db, the default, unless KETENHUB_DATABASE__URL says)."""
    assert all(is_valid_bsn(youth.bsn) != (youth in INVALID) for youth in YOUTHS)
    assert len({youth.bsn for youth in YOUTHS}) == len(YOUTHS)
    keys = await prepare(env.get("KETENHUB_DATABASE__URL", f"sqlite+aiosqlite:///{workdir / 'ketenhub.db'}"))
    hub = RunningHub(
        workdir,
        KETENHUB_VERWIJSINDEX__URL=f"http://127.0.0.1:{index}",
        KETENHUB_HTTP__MAX_BODY_BYTES=str(BODY_LIMIT),
        KETENHUB_VERWIJSINDEX__POLL_INTERVAL_S="0.2",
        KETENHUB_SMTP__HOST="127.0.0.1",  # a mail server that is down: nothing listens on its port
        KETENHUB_SMTP__PORT=str(free_port()),
        **env,
    )
    try:
        await hub.ready()
        async with httpx.AsyncClient(base_url=hub.url, timeout=30) as client:
            await send_referrals(client, keys)
            await send_signals(client, {"Authorization": f"Bearer {keys['zaaksysteem']}"})
            await send_records(hub.broker())
            metrics = await settled_metrics(client)
    finally:
        await hub.stop()
    console = hub.said()
    assert hub.proc.returncode == 0, console[-3000:]
    assert console.endswith("ketenhub stopped\n"), console[-3000:]  # read to its last line
    return console, metrics


async def prepare(url: str) -> dict[str, str]:
    """The store `ketenhub run` will open, with partners (their keys returned) and a caseworker."""
    store = Store(url)
    keys: dict[str, str] = {}
    try:
        await store.migrate()
        async with store.transaction() as session:
            for kind in ("politie", "boa", "leerplicht", "preventief", "zaaksysteem"):
                _, keys[kind] = await add_partner(session, f"{kind}-privacy", PartnerType(kind))
            caseworker = Caseworker(
                caseworker_id="cw-priv", name="Medewerker Privacy", email="cw-priv@halt.nl",
                phone="070 123 4567", team="DEN_HAAG", meldingsbevoegd=True,
            )  # fmt: skip
            await upsert_caseworker(session, caseworker)
    finally:
        await store.close()
    return keys


class RunningHub:
    """`ketenhub run` as a user starts it, its stdout and stderr in one file."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.console = workdir / "console.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
        with self.console.open("wb") as out:
            self.proc = subprocess.Popen(
                [KETENHUB, "run", "--port", str(self.port)],
                cwd=workdir, env=clean | env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip

    def said(self) -> str:
        return self.console.read_text(errors="replace")

    def broker(self) -> str:
        """The embedded broker's address, from the banner."""
        found = re.search(r"^  broker +(\S+) ", self.said(), re.MULTILINE)
        assert found, self.said()[-3000:]
        return found.group(1)

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.proc.poll() is None, self.said()[-3000:]
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    checks = (await client.get(self.url + "/readyz")).json()["checks"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False
            # all but the mail server, which is down
            ready = checks.get("store") == checks.get("broker") == checks.get("verwijsindex") == "ok"
            return ready and "stop with Ctrl-C" in self.said()  # the banner is out too

        await wait_for(answers, timeout_s=60)

    async def stop(self) -> None:
        """SIGTERM, and wait for the clean stop in a thread: the fake index serves from this loop."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)


def index_app(refuses: str, matched: str) -> Starlette:
    """A Verwijsindex whose health check answers, but which quotes each signal sent to it in an error
    (the title, the detail in three cases, a field's message): 400 for the youth whose BSN is
    `refuses` (the DLQ at once), else 503 (retried, then parked). Once the signal of `matched` came,
    its feed has a match on it, and an entry that breaks the contract quoting FEED_BROKEN."""
    signal_ids: dict[str, str] = {}

    async def status(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def signal(request: Request) -> Response:
        sent = (await request.body()).decode()
        if matched in sent:
            signal_ids[matched] = request.path_params["signal_id"]
        quoted = {
            "titel": f"kan niet verwerken: {sent}",
            "detail": f"{sent} {sent.upper()} {sent.lower()}",
            "fouten": [{"veld": "jeugdige", "melding": sent}],
        }
        if refuses in sent:
            return JSONResponse(quoted, status_code=400)
        return JSONResponse(quoted, status_code=503, headers={"Retry-After": "1"})

    async def feed(request: Request) -> Response:
        if matched not in signal_ids or request.query_params.get("vanaf") == "1":
            return JSONResponse({"matches": [], "volgende": request.query_params.get("vanaf", "0")})
        counterpart = {
            "organisatie": {"code": "jeugdhulp-priv", "naam": "Jeugdhulp Privacy"},
            "contactpersoon": {"naam": "J. Tegenpartij", "email": "j.tegenpartij@jeugdhulp.example"},
        }
        match = {
            "match_id": "m-priv-1", "cursor": "1", "type": "CLIENTMATCH", "signaal_id": signal_ids[matched],
            "organisatie_code": "halt-den-haag", "tegenpartij": counterpart,
            "ontstaan_op": utcnow().isoformat(),
        }  # fmt: skip
        y, bsn = FEED_BROKEN, FEED_BROKEN.bsn
        broken = match | {
            "match_id": f"m-{y.surname}", "type": y.given_names,
            "signaal_id": f"{bsn[:3]} {bsn[3:6]} {bsn[6:]}",
            "tegenpartij": {"jeugdige": {"bsn": bsn, "naam": f"{y.given_names} {y.surname}"}},
            "ontstaan_op": f"{y.surname} {bsn}",
        }  # fmt: skip
        return JSONResponse({"matches": [match, broken], "volgende": "1"})

    return Starlette(
        routes=[
            Route("/api/v1/status", status),
            Route("/api/v1/signalen/{signal_id}", signal, methods=["PUT", "PATCH", "DELETE", "GET"]),
            Route("/api/v1/matches", feed),
        ]
    )


def sample(kind: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / kind / name).read_text(encoding="utf-8"))
    return data


def politie(youth: Youth, pv: str, **verdachte: Any) -> dict[str, Any]:
    """The police sample with this youth as suspect (named in the description too) under its own PV."""
    record = sample("politie", "valid_winkeldiefstal.json")
    record["procesVerbaalNummer"] = pv
    record["omschrijving"] = f"{youth.given_names} {youth.surname} ({youth.bsn}) pakte chips."
    record["wettelijkVertegenwoordigers"][0]["naam"] = f"M. {youth.surname}"
    record["verdachte"] |= {
        "bsn": youth.bsn, "voornamen": youth.given_names, "voorvoegsel": None, "achternaam": youth.surname,
    } | verdachte  # fmt: skip
    return record


def dumped(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def leerplicht_csv(*youths: Youth) -> bytes:
    """The leerplicht sample's first row once per youth, its BSN as 8 digits where it starts with 0."""
    lines = (DATA / "leerplicht" / "valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(";")
    rows = [lines[0]]
    for n, youth in enumerate(youths):
        cells = dict(zip(header, lines[1].split(";"), strict=True)) | {
            "Dossiernummer": f"LP-PRIV-{n}", "BSN": youth.bsn.removeprefix("0"),
            "Voornamen": youth.given_names, "Achternaam": youth.surname,
            "Naam ouder/verzorger": f"R. {youth.surname}",
        }  # fmt: skip
        rows.append(";".join(cells[h] for h in header))
    return ("\n".join(rows) + "\n").encode()


async def send_referrals(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    """Every HTTP path, each answered as the README says (so each was taken)."""

    async def post(
        kind: str, body: bytes | AsyncIterator[bytes], *, key: str | None = None, **headers: str
    ) -> int:
        sent = {
            "Content-Type": "text/csv" if kind == "leerplicht" else "application/json",
            "Authorization": f"Bearer {key or keys[kind]}",
        } | headers
        return (await client.post(f"/api/v1/{kind}/verwijzingen", content=body, headers=sent)).status_code

    valid = dumped(politie(HTTP_VALID, "PL1500-2025031201-71"))
    assert await post("politie", valid) == 201
    assert await post("politie", valid) == 200  # a repeat
    assert await post("politie", dumped(politie(HTTP_CONFLICT, "PL1500-2025031201-71"))) == 409
    assert await post("politie", dumped(politie(HTTP_ELFPROEF, "PL1500-2025031201-72"))) == 400
    typed = politie(
        HTTP_TYPES, "PL1500-2025031201-73", bsn=int(HTTP_TYPES.bsn), voornamen=[HTTP_TYPES.given_names],
        achternaam={"naam": HTTP_TYPES.surname},
    )  # fmt: skip
    assert await post("politie", dumped(typed)) == 400
    bsn = HTTP_UNKNOWN.bsn
    # a key that holds a BSN or a space is no field name: the hub does not repeat it (schemas/problems.py)
    full_name = f"{HTTP_UNKNOWN.given_names} {HTTP_UNKNOWN.surname}"
    keys_of_values = {bsn: 1, f"{bsn[:3]}.{bsn[3:6]}.{bsn[6:]}": 1, full_name: 1}
    unknown = politie(
        HTTP_UNKNOWN,
        "PL1500-2025031201-74",
        roepnaam=HTTP_UNKNOWN.given_names,
        bsnOuder=bsn,
        **keys_of_values,
    )
    assert await post("politie", dumped(unknown)) == 400
    broken = dumped(politie(HTTP_BROKEN, "PL1500-2025031201-75"))
    assert await post("politie", broken[: broken.index(b'"geboortedatum"')]) == 400
    oversize = politie(HTTP_OVERSIZE, "PL1500-2025031201-76")
    oversize["omschrijving"] = (
        f"{HTTP_OVERSIZE.given_names} {HTTP_OVERSIZE.surname} {HTTP_OVERSIZE.bsn} " * 3_000
    )
    too_large = dumped(oversize)
    assert BODY_LIMIT < len(too_large) < 2 * BODY_LIMIT
    assert await post("politie", too_large) == 413  # refused on its Content-Length

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(too_large), 8192):
            yield too_large[start : start + 8192]

    assert await post("politie", chunked()) == 413  # refused once what was read passed the limit
    first = f'"bsn": "{HTTP_TWICE.bsn}", "voornamen": "{HTTP_TWICE.given_names}", "bsn": '.encode()
    twice = dumped(politie(HTTP_TWICE, "PL1500-2025031201-77")).replace(b'"bsn": ', first)
    assert await post("politie", twice) == 400
    bsn = HTTP_SEPARATED.bsn
    for n, separated in enumerate((f"{bsn[:3]}.{bsn[3:6]}.{bsn[6:]}", f"{bsn[:4]} {bsn[4:6]} {bsn[6:]}")):
        record = politie(HTTP_SEPARATED, f"PL1500-2025031201-78{n}", bsn=separated)
        assert await post("politie", dumped(record)) == 400
    glued = politie(HTTP_GLUED, "PL1500-2025031201-79", bsn=f"bsn{HTTP_GLUED.bsn}x")
    assert await post("politie", dumped(glued)) == 400
    refused = dumped(politie(HTTP_REFUSED, "PL1500-2025031201-710"))
    assert await post("politie", refused, key="kh_0123456789abcdef_nope") == 401
    assert await post("politie", refused, key=keys["boa"]) == 403
    assert await post("politie", refused, **{"Content-Type": "text/plain"}) == 415
    politie_key = {"Authorization": f"Bearer {keys['politie']}"}
    for url in (
        f"/api/v1/verwijzingen/{HTTP_URL.bsn}",
        f"/api/v1/verwijzingen/{HTTP_URL.surname}?bsn={HTTP_URL.bsn}&naam={HTTP_URL.given_names}",
    ):
        assert (await client.get(url, headers=politie_key)).status_code == 404
    boa = sample("boa", "valid_openbare_dronkenschap.json")
    boa["betrokkene"] |= {
        "bsn": int(BOA_NUMBER.bsn), "voornaam": BOA_NUMBER.given_names, "achternaam": BOA_NUMBER.surname,
    }  # fmt: skip
    assert await post("boa", dumped(boa)) == 400
    registration = sample("preventief", "valid_wijkteam.json")
    registration["jongere"] |= {
        "bsn": PREVENTIEF.bsn, "voornamen": PREVENTIEF.given_names, "achternaam": PREVENTIEF.surname,
    }  # fmt: skip
    assert await post("preventief", dumped(registration)) == 201
    batch = await client.post(
        "/api/v1/leerplicht/verwijzingen",
        content=leerplicht_csv(CSV_VALID, CSV_BAD),
        headers={"Content-Type": "text/csv", "Authorization": f"Bearer {keys['leerplicht']}"},
    )
    assert [row["result"] for row in batch.json()["rows"]] == ["ACCEPTED", "REJECTED"], batch.text


async def send_signals(client: httpx.AsyncClient, system: dict[str, str]) -> None:
    """Three signals for the failing index (one it matches), one refused for a field off rule 11's list."""
    today = local_day(utcnow())
    headers = system | {"X-Medewerker": "cw-priv"}

    def body(youth: Youth, **more: str) -> dict[str, Any]:
        return {
            "youth": {
                "bsn": youth.bsn, "given_names": youth.given_names, "surname": youth.surname,
                "birth_date": date(today.year - 15, 1, 1).isoformat(), "gender": "VROUW",
                "municipality": "Den Haag", **more,
            },
            "youth_informed_at": today.isoformat(),
            "parent_letter_sent_at": today.isoformat(),
        }  # fmt: skip

    for youth in (INDEX_DOWN, INDEX_REFUSES, MATCHED):
        answer = await client.post("/api/v1/signalen", json=body(youth), headers=headers)
        assert answer.status_code == 201, answer.text
    leaky = body(SIGNAL_LEAKY, roepnaam=SIGNAL_LEAKY.given_names, reason=f"{SIGNAL_LEAKY.surname} stal")
    assert (await client.post("/api/v1/signalen", json=leaky, headers=headers)).status_code == 400


async def send_records(broker: str) -> None:
    """Police records on their Kafka topic (one taken in, three dead-lettered) and a canonical referral
    that is no Referral (dead-lettered)."""
    taken = politie(KAFKA_VALID, "PL1500-2025031201-711")
    elfproef = politie(KAFKA_ELFPROEF, "PL1500-2025031201-712")
    named = [("transaction-id", f"{KAFKA_ELFPROEF.given_names} {KAFKA_ELFPROEF.surname}".encode())]
    broken = dumped(politie(KAFKA_BROKEN, "PL1500-2025031201-713"))[:-40]
    typed = politie(
        KAFKA_TYPES, "PL1500-2025031201-714", bsn=int(KAFKA_TYPES.bsn), voornamen=[KAFKA_TYPES.given_names]
    )
    await produce(
        broker,
        POLITIE_TOPIC,
        [
            (None, dumped(taken), []),
            (None, dumped(elfproef), named),
            (KAFKA_BROKEN.bsn.encode(), broken, []),
            (None, dumped(typed), []),
        ],
    )
    youth = KAFKA_CANONICAL
    canonical = Envelope(
        type="Referral",
        source="wijkteam-connector",
        correlation_id="WT-PRIV-1",
        payload={
            "youth": {"bsn": youth.bsn, "given_names": youth.given_names, "surname": youth.surname},
            "notes": f"{youth.given_names} {youth.surname}, {youth.bsn}",
        },
    )
    await produce(broker, RECEIVED_TOPIC, [(None, canonical.to_bytes(), canonical.headers())])


async def settled_metrics(client: httpx.AsyncClient) -> str:
    """/metrics once the police records, the canonical referral, the signals and the match were handled."""

    def counted(text: str, name: str, **labels: str) -> float:
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    async def handled() -> str | None:
        text = (await client.get("/metrics")).text
        messages, calls = "ketenhub_messages_total", "ketenhub_delivery_attempts_total"
        done = (
            counted(text, messages, topic=POLITIE_TOPIC, outcome="processed") >= 1
            and counted(text, messages, topic=POLITIE_TOPIC, outcome="dead_lettered") >= 3
            and counted(text, messages, topic=RECEIVED_TOPIC, outcome="dead_lettered") >= 1
            and counted(text, calls, partner="verwijsindex", result="transient") >= 1
            and counted(text, calls, partner="verwijsindex", result="permanent") >= 1
            and counted(text, messages, outcome="refused") >= 1  # the broken feed entry
            and counted(text, calls, partner="smtp", result="transient") >= 1  # the match mail
        )
        return text if done else None

    metrics: str = await wait_for(handled, timeout_s=30, interval_s=0.1)
    return metrics
