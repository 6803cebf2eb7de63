"""`ketenhub run` says no BSN and no youth name on its console (stdout, stderr) or in /metrics, on every
path a partner's values take through it: referrals over HTTP (valid, repeated, in conflict, and
malformed in every way a partner gets wrong), police records on Kafka that are dead-lettered, and
signals that a failing Verwijsindex answers with an error quoting them.

Each path has a youth of its own (a valid BSN, distinctive names), so a leak names the path it took.
The output is searched for each BSN also with separators between its digits (`314 159 265`,
`314.159.265`), and for each name in any case."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
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
POLITIE_TOPIC, POLITIE_DLQ = "partner.politie.referral.v1", "partner.politie.referral.dlq.v1"
RECEIVED_TOPIC = "referral.received.v1"
SIGNAL_TOPIC = "verwijsindex.signal.v1"


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
        """The BSN as 9 digits, or 8 without a leading zero, with any one separator between digits."""
        digits = [self.bsn, self.bsn[1:]] if self.bsn.startswith("0") else [self.bsn]
        forms = [r"[\s.\-_/]?".join(form) for form in digits]
        return re.compile("|".join(forms))


# BSNs from mathematical and physical constants, valid (rule 1) but where a path needs one that is not;
# names found in no text of the hub, and in no dictionary.
HTTP_VALID = Youth("HTTP: a valid police referral, and the same again", "314159265", "Oswaldus Ferdinand", "Kwakkelstein")
HTTP_CONFLICT = Youth("HTTP: another youth under a case reference in use", "271828183", "Brunhilde", "Vlasbloem")
HTTP_ELFPROEF = Youth("HTTP: a BSN failing the elfproef", "161803399", "Gerolfina", "Zwaluwstaart")
HTTP_TYPES = Youth("HTTP: wrong types (BSN a number, names a list)", "141421356", "Quintijn", "Brakkenhoff")
HTTP_UNKNOWN = Youth("HTTP: unknown fields holding values and named by them", "173205082", "Ottoline", "Sprokkelmans")
HTTP_BROKEN = Youth("HTTP: broken JSON", "223606790", "Wendelmoet", "Ruysdaelhof")
HTTP_OVERSIZE = Youth("HTTP: a body over the size limit", "120205695", "Fokeltje", "Klaverkamp")
HTTP_TWICE = Youth("HTTP: a key named twice", "138064908", "Isebrandt", "Pannekoekhuis")
HTTP_SEPARATED = Youth("HTTP: a BSN sent with separators", "091093831", "Tjitskeline", "Schimmelwoud")
HTTP_GLUED = Youth("HTTP: a BSN glued to letters", "083144626", "Radboudine", "Knotwilgen")
HTTP_REFUSED = Youth("HTTP: a wrong key, another partner's, a wrong content type", "057721567", "Sjoerdina", "Ooievaarsnest")
HTTP_URL = Youth("HTTP: a BSN and names in a URL", "069314718", "Lambertha", "Hunebedder")
BOA_NUMBER = Youth("HTTP: BOA, the BSN as a JSON number (its leading zero lost)", "046692010", "Everhardus", "Zilvermeeuw")
PREVENTIEF = Youth("HTTP: a valid preventief registration", "026854521", "Dideriek", "Krentenbollen")
CSV_VALID = Youth("HTTP: a leerplicht row taken in", "299792456", "Aleidis", "Mosselbankers")
CSV_BAD = Youth("HTTP: a leerplicht row refused (elfproef)", "667408318", "Rombout", "Vuurtorenwacht")
KAFKA_VALID = Youth("Kafka: a valid police record", "160217660", "Geertruida", "Wolkenschuiver")
KAFKA_ELFPROEF = Youth("Kafka: a police record failing the elfproef, names in its transaction-id", "602214076", "Hildebrand", "Duifhuizen")
KAFKA_BROKEN = Youth("Kafka: a police record of broken JSON, keyed by the BSN", "964853322", "Barbertje", "Klompenmaker")
KAFKA_TYPES = Youth("Kafka: a police record with wrong types", "177245384", "Machteld", "Ganzenveer")
KAFKA_CANONICAL = Youth("Kafka: a canonical referral that is no Referral", "529177213", "Aldegonde", "Sluiswachter")
INDEX_DOWN = Youth("Verwijsindex: 503 quoting the signal", "135792460", "Hesseltje", "Molenwiekers")
INDEX_REFUSES = Youth("Verwijsindex: 400 quoting the signal", "192837461", "Tsjalling", "Paddenstoelen")
SIGNAL_LEAKY = Youth("signal API: a field outside the rule-11 whitelist", "564738293", "Wopkeline", "Dijkgravin")
YOUTHS = [
    HTTP_VALID, HTTP_CONFLICT, HTTP_ELFPROEF, HTTP_TYPES, HTTP_UNKNOWN, HTTP_BROKEN, HTTP_OVERSIZE, HTTP_TWICE,
    HTTP_SEPARATED, HTTP_GLUED, HTTP_REFUSED, HTTP_URL, BOA_NUMBER, PREVENTIEF, CSV_VALID, CSV_BAD,
    KAFKA_VALID, KAFKA_ELFPROEF, KAFKA_BROKEN, KAFKA_TYPES, KAFKA_CANONICAL, INDEX_DOWN, INDEX_REFUSES,
    SIGNAL_LEAKY,
]  # fmt: skip
INVALID = (HTTP_ELFPROEF, CSV_BAD, KAFKA_ELFPROEF)


def _sample(kind: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / kind / name).read_text())
    return data


def politie(youth: Youth, pv: str, **verdachte: Any) -> dict[str, Any]:
    """The police sample with this youth as suspect and its own proces-verbaal number."""
    record = _sample("politie", "valid_winkeldiefstal.json")
    record["procesVerbaalNummer"] = pv
    record["verdachte"] |= {"bsn": youth.bsn, "voornamen": youth.given_names, "achternaam": youth.surname}
    record["verdachte"] |= verdachte
    record["verdachte"]["voorvoegsel"] = None
    record["wettelijkVertegenwoordigers"][0]["naam"] = f"M. {youth.surname}"
    record["omschrijving"] = f"{youth.given_names} {youth.surname} ({youth.bsn}) pakte chips."
    return record


def leerplicht_csv(*youths: Youth) -> bytes:
    lines = (DATA / "leerplicht" / "valid_batch_utf8.csv").read_text(encoding="utf-8").splitlines()
    header, row = lines[0].split(";"), lines[1].split(";")
    out = [lines[0]]
    for n, youth in enumerate(youths):
        cells = dict(zip(header, row, strict=True))
        cells |= {
            "Dossiernummer": f"LP-PRIV-{n}",
            "BSN": youth.bsn.lstrip("0"),
            "Voornamen": youth.given_names,
            "Achternaam": youth.surname,
            "Naam ouder/verzorger": f"R. {youth.surname}",
        }
        out.append(";".join(cells[h] for h in header))
    return ("\n".join(out) + "\n").encode()


def index_app(refuses: str) -> Starlette:
    """A Verwijsindex that is up (its health check answers) but fails every signal, quoting the request
    in its answer: 400 for the youth whose BSN is `refuses`, else 503. Its match feed is down too."""

    async def status(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def signal(request: Request) -> Response:
        sent = (await request.body()).decode()
        quoted = {
            "titel": f"kan niet verwerken: {sent}",
            "detail": f"{sent} {sent.upper()} {sent.lower()}",
            "fouten": [{"veld": "jeugdige", "melding": sent}],
        }
        if refuses in sent:
            return JSONResponse(quoted, status_code=400)
        return JSONResponse(quoted, status_code=503, headers={"Retry-After": "1"})

    async def feed(request: Request) -> Response:
        return JSONResponse({"titel": f"storing {request.url}"}, status_code=503)

    return Starlette(
        routes=[
            Route("/api/v1/status", status),
            Route("/api/v1/signalen/{signal_id}", signal, methods=["PUT", "PATCH", "DELETE", "GET"]),
            Route("/api/v1/matches", feed),
        ]
    )


async def prepare(workdir: Path) -> dict[str, str]:
    """The database `ketenhub run` will use (its default, ./ketenhub.db): partners and a caseworker."""
    store = Store(f"sqlite+aiosqlite:///{workdir / 'ketenhub.db'}")
    keys: dict[str, str] = {}
    try:
        await store.migrate()
        async with store.transaction() as session:
            for kind in ("politie", "boa", "leerplicht", "preventief", "zaaksysteem"):
                _, keys[kind] = await add_partner(session, f"{kind}-privacy", PartnerType(kind))
            await upsert_caseworker(
                session,
                Caseworker(
                    caseworker_id="cw-priv", name="Medewerker Privacy", email="cw-priv@halt.nl",
                    phone="070 123 4567", team="DEN_HAAG", meldingsbevoegd=True,
                ),  # fmt: skip
            )
    finally:
        await store.close()
    return keys


class Hub:
    """`ketenhub run` as a user starts it, its console captured in a file."""

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

    def broker(self) -> str | None:
        found = re.search(r"^  broker +(\S+) ", self.said(), re.MULTILINE)
        return found.group(1) if found else None

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.proc.poll() is None, self.said()[-3000:]
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(self.url + "/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(answers, timeout_s=60)
        await wait_for(self.broker, timeout_s=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
async def index() -> AsyncIterator[int]:
    async with serving(index_app(refuses=INDEX_REFUSES.bsn)) as port:
        yield port


def counted(metrics: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def leaks(text: str) -> Iterator[str]:
    """Every youth value found in `text`, with the path it was sent along and where it stands."""
    lowered = text.lower()
    for youth in YOUTHS:
        for found in youth.bsn_pattern().finditer(text):
            yield f"BSN {youth.bsn} ({youth.path}): ...{text[max(found.start() - 150, 0) : found.end() + 50]!r}"
        for name in youth.names():
            at = lowered.find(name.lower())
            if at != -1:
                yield f"name {name!r} ({youth.path}): ...{text[max(at - 150, 0) : at + len(name) + 50]!r}"


async def test_no_bsn_or_youth_name_on_the_console_or_in_metrics(tmp_path: Path, index: int) -> None:
    assert all(is_valid_bsn(y.bsn) != (y in INVALID) for y in YOUTHS)
    assert len({y.bsn for y in YOUTHS}) == len(YOUTHS)
    keys = await prepare(tmp_path)
    hub = Hub(tmp_path, KETENHUB_VERWIJSINDEX__URL=f"http://127.0.0.1:{index}", KETENHUB_LOG_LEVEL="DEBUG")
    try:
        await hub.ready()
        await send_everything(hub, keys)
        metrics = await settle(hub)
    finally:
        hub.stop()
    said = hub.said()
    assert hub.proc.returncode == 0, said[-3000:]
    assert "ketenhub stopped" in said  # the whole console was read: to its last line
    found = list(leaks(said)) + [f"/metrics: {leak}" for leak in leaks(metrics)]
    assert not found, "\n".join(found)


async def send_everything(hub: Hub, keys: dict[str, str]) -> None:
    def auth(kind: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[kind]}"}

    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as client:

        async def post(kind: str, body: bytes, *, as_: str | None = None, **headers: str) -> int:
            media = "text/csv" if kind == "leerplicht" else "application/json"
            sent = {"Content-Type": media} | auth(as_ or kind) | headers
            try:
                answer = await client.post(f"/api/v1/{kind}/verwijzingen", content=body, headers=sent)
            except httpx.HTTPError:  # the hub may close the connection on a body it will not read
                return 0
            return answer.status_code

        def dumped(record: dict[str, Any]) -> bytes:
            return json.dumps(record).encode()

        valid = dumped(politie(HTTP_VALID, "PL1500-2025031201-71"))
        assert await post("politie", valid) == 201
        assert await post("politie", valid) == 200  # a repeat
        assert await post("politie", dumped(politie(HTTP_CONFLICT, "PL1500-2025031201-71"))) == 409
        assert await post("politie", dumped(politie(HTTP_ELFPROEF, "PL1500-2025031201-72"))) == 400
        wrong_types = politie(HTTP_TYPES, "PL1500-2025031201-73", bsn=int(HTTP_TYPES.bsn))
        wrong_types["verdachte"] |= {"voornamen": [HTTP_TYPES.given_names], "achternaam": {"x": HTTP_TYPES.surname}}
        assert await post("politie", dumped(wrong_types)) == 400
        unknown = politie(HTTP_UNKNOWN, "PL1500-2025031201-74")
        unknown["verdachte"] |= {
            "roepnaam": HTTP_UNKNOWN.given_names,
            "bsnOuder": HTTP_UNKNOWN.bsn,
            HTTP_UNKNOWN.bsn: True,  # a key that is a BSN, or a name with a space, is no field name
            f"{HTTP_UNKNOWN.bsn[:3]}.{HTTP_UNKNOWN.bsn[3:6]}.{HTTP_UNKNOWN.bsn[6:]}": 1,
            f"{HTTP_UNKNOWN.given_names} {HTTP_UNKNOWN.surname}": 1,
        }
        assert await post("politie", dumped(unknown)) == 400
        broken = dumped(politie(HTTP_BROKEN, "PL1500-2025031201-75"))
        assert await post("politie", broken[: broken.index(HTTP_BROKEN.surname.encode()) + 20]) == 400
        oversize = politie(HTTP_OVERSIZE, "PL1500-2025031201-76")
        oversize["omschrijving"] = f"{HTTP_OVERSIZE.given_names} {HTTP_OVERSIZE.surname} {HTTP_OVERSIZE.bsn} " * 40_000
        assert await post("politie", dumped(oversize)) in (413, 0)
        twice = dumped(politie(HTTP_TWICE, "PL1500-2025031201-77")).replace(
            b'"bsn": ', f'"bsn": "{HTTP_TWICE.bsn}", "voornamen": "{HTTP_TWICE.given_names}", "bsn": '.encode()
        )
        assert await post("politie", twice) == 400
        b = HTTP_SEPARATED.bsn
        separated = politie(HTTP_SEPARATED, "PL1500-2025031201-78", bsn=f"{b[:3]}.{b[3:6]}.{b[6:]}")
        assert await post("politie", dumped(separated)) == 400
        spaced = politie(HTTP_SEPARATED, "PL1500-2025031201-79", bsn=f"{b[:4]} {b[4:6]} {b[6:]}")
        assert await post("politie", dumped(spaced)) == 400
        glued = politie(HTTP_GLUED, "PL1500-2025031201-80", bsn=f"bsn{HTTP_GLUED.bsn}x")
        assert await post("politie", dumped(glued)) == 400
        refused = dumped(politie(HTTP_REFUSED, "PL1500-2025031201-81"))
        assert await post("politie", refused, Authorization="Bearer nope") == 401
        assert await post("politie", refused, as_="boa") == 403
        assert await post("politie", refused, **{"Content-Type": "text/plain"}) == 415
        for url in (
            f"/api/v1/verwijzingen/{HTTP_URL.bsn}",
            f"/api/v1/verwijzingen/{HTTP_URL.surname}?bsn={HTTP_URL.bsn}&naam={HTTP_URL.given_names}",
        ):
            assert (await client.get(url, headers=auth("politie"))).status_code in (400, 404)
        boa = _sample("boa", "valid_openbare_dronkenschap.json")
        boa["betrokkene"] |= {
            "bsn": int(BOA_NUMBER.bsn), "voornaam": BOA_NUMBER.given_names, "achternaam": BOA_NUMBER.surname
        }  # fmt: skip
        assert await post("boa", dumped(boa)) == 400
        registration = _sample("preventief", "valid_wijkteam.json")
        registration["jongere"] |= {
            "bsn": PREVENTIEF.bsn, "voornamen": PREVENTIEF.given_names, "achternaam": PREVENTIEF.surname
        }  # fmt: skip
        assert await post("preventief", dumped(registration)) == 201
        batch = await client.post(
            "/api/v1/leerplicht/verwijzingen",
            content=leerplicht_csv(CSV_VALID, CSV_BAD),
            headers={"Content-Type": "text/csv"} | auth("leerplicht"),
        )
        assert batch.status_code == 200, batch.text
        assert [row["result"] for row in batch.json()["rows"]] == ["ACCEPTED", "REJECTED"], batch.text

        await send_signals(client, auth("zaaksysteem"))

    broker = hub.broker()
    assert broker is not None
    valid_record = politie(KAFKA_VALID, "PL1500-2025031201-91")
    bad_sum = politie(KAFKA_ELFPROEF, "PL1500-2025031201-92")
    broken_record = dumped(politie(KAFKA_BROKEN, "PL1500-2025031201-93"))[:-40]
    typed = politie(KAFKA_TYPES, "PL1500-2025031201-94", bsn=int(KAFKA_TYPES.bsn), voornamen=[KAFKA_TYPES.given_names])
    named = (("transaction-id", f"{KAFKA_ELFPROEF.given_names} {KAFKA_ELFPROEF.surname}".encode()),)
    await produce(
        broker,
        POLITIE_TOPIC,
        [
            (None, dumped(valid_record), ()),
            (None, dumped(bad_sum), named),
            (KAFKA_BROKEN.bsn.encode(), broken_record, ()),
            (None, dumped(typed), ()),
        ],
    )
    canonical = Envelope(
        type="Referral",
        source="wijkteam-connector",
        correlation_id="WT-PRIV-1",
        payload={
            "youth": {
                "bsn": KAFKA_CANONICAL.bsn, "given_names": KAFKA_CANONICAL.given_names,
                "surname": KAFKA_CANONICAL.surname, "shoe_size": KAFKA_CANONICAL.bsn,
            }
        },
    )  # fmt: skip
    await produce(broker, RECEIVED_TOPIC, [(None, canonical.to_bytes(), canonical.headers())])


async def send_signals(client: httpx.AsyncClient, system: dict[str, str]) -> None:
    today = local_day(utcnow())
    headers = system | {"X-Medewerker": "cw-priv"}

    def body(youth: Youth) -> dict[str, Any]:
        return {
            "youth": {
                "bsn": youth.bsn, "given_names": youth.given_names, "surname": youth.surname,
                "birth_date": date(today.year - 15, 1, 1).isoformat(), "gender": "VROUW",
                "municipality": "Den Haag",
            },
            "youth_informed_at": today.isoformat(),
            "parent_letter_sent_at": today.isoformat(),
        }  # fmt: skip

    for youth in (INDEX_DOWN, INDEX_REFUSES):
        answer = await client.post("/api/v1/signalen", json=body(youth), headers=headers)
        assert answer.status_code == 201, answer.text
    leaky = body(SIGNAL_LEAKY)
    leaky["youth"] |= {"roepnaam": SIGNAL_LEAKY.given_names, "reason": f"{SIGNAL_LEAKY.surname} stal"}
    assert (await client.post("/api/v1/signalen", json=leaky, headers=headers)).status_code == 400


async def settle(hub: Hub) -> str:
    """/metrics once every record was handled: the police records, the canonical one, both signals."""
    async with httpx.AsyncClient(base_url=hub.url, timeout=30) as client:

        async def handled() -> str | None:
            text = (await client.get("/metrics")).text
            done = (
                counted(text, "ketenhub_messages_total", topic=POLITIE_TOPIC, outcome="processed") >= 1
                and counted(text, "ketenhub_messages_total", topic=POLITIE_TOPIC, outcome="dead_lettered") >= 3
                and counted(text, "ketenhub_messages_total", topic=RECEIVED_TOPIC, outcome="dead_lettered") >= 1
                and counted(text, "ketenhub_delivery_attempts_total", partner="verwijsindex", result="transient") >= 1
                and counted(text, "ketenhub_delivery_attempts_total", partner="verwijsindex", result="permanent") >= 1
            )
            return text if done else None

        metrics: str = await wait_for(handled, timeout_s=30, interval_s=0.1)
    return metrics
