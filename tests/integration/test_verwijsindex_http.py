"""VerwijsindexClient against the simulator over real HTTP (uvicorn): each fault maps to the right error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from connectors.verwijsindex.client import NotInIndex, VerwijsindexClient, redact, youth_secrets
from connectors.verwijsindex.contract import (
    Contactpersoon,
    Geslacht,
    IntrekkingsReden,
    Jeugdige,
    Match,
    Organisatie,
    SignaalRegistratie,
    SignaalStatus,
)
from connectors.verwijsindex.sim_server import SimulatorServer
from hub.clock import today
from hub.errors import PermanentError, TransientError
from tests.helpers.http import serving

pytestmark = pytest.mark.integration

BSN = "999990044"


def registration(
    org: str = "halt-den-haag", bsn: str = BSN, einddatum: date | None = None
) -> SignaalRegistratie:
    return SignaalRegistratie(
        jeugdige=Jeugdige(
            bsn=bsn,
            voornamen="Sanne",
            voorvoegsel="de",
            geslachtsnaam="Vries",
            geboortedatum=date(2010, 3, 14),
            geslacht=Geslacht.VROUW,
            gemeente="Den Haag",
        ),
        organisatie=Organisatie(code=org, naam=org),
        contactpersoon=Contactpersoon(naam=f"Contact {org}", email=f"c@{org}.nl", telefoon="070 123 4567"),
        aangemaakt=today() - timedelta(days=400) if einddatum else today(),
        einddatum=einddatum or today() + timedelta(days=365),
    )


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


@pytest.fixture
async def admin(server: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        assert (await client.post("/admin/reset")).status_code == 204
        yield client
        await client.post("/admin/reset")


@pytest.fixture
async def vi(server: SimulatorServer, admin: httpx.AsyncClient) -> AsyncIterator[VerwijsindexClient]:
    # Long enough that a slow answer on a loaded machine is not taken for a hang; the hanging-call
    # test uses a client of its own with a short timeout.
    async with VerwijsindexClient(server.url, timeout=10, organisatie="halt-den-haag") as client:
        yield client


async def test_register_withdraw_and_contact_over_http(
    vi: VerwijsindexClient, admin: httpx.AsyncClient
) -> None:
    first = await vi.register("sig-1", registration(), "tx-1")
    again = await vi.register("sig-1", registration(), "tx-2")
    assert first == again and first.status is SignaalStatus.ACTIEF
    changed = await vi.change_contact("sig-1", Contactpersoon(naam="Delegate", email="d@halt.nl"), "tx-3")
    assert changed.contactpersoon.naam == "Delegate"
    ended = await vi.withdraw("sig-1", IntrekkingsReden.RISICO_WEG, "tx-4")
    assert ended.status is SignaalStatus.BEEINDIGD_RISICO_WEG
    assert (await vi.get("sig-1", "tx-5")) == ended
    log = (await admin.get("/admin/calls")).json()
    assert [(c["method"], c["transaction_id"]) for c in log["calls"]] == [
        ("PUT", "tx-1"), ("PUT", "tx-2"), ("PATCH", "tx-3"), ("DELETE", "tx-4"), ("GET", "tx-5"),
    ]  # fmt: skip


async def test_match_feed_over_http(vi: VerwijsindexClient) -> None:
    await vi.register("halt-1", registration("halt-den-haag"), "tx")
    await vi.register("wt-1", registration("wijkteam-escamp"), "tx")
    matches, cursor = await vi.matches(None, 10, "tx-feed")
    assert [(m.signaal_id, m.tegenpartij.organisatie.code) for m in matches] == [
        ("halt-1", "wijkteam-escamp")
    ]
    assert await vi.matches(cursor, 10, "tx-feed") == ([], cursor)


async def test_503_is_transient(vi: VerwijsindexClient, admin: httpx.AsyncClient) -> None:
    await admin.post("/admin/faults", json={"error_rate": 1.0})
    with pytest.raises(TransientError, match="HTTP 503") as caught:
        await vi.register("sig-1", registration(), "tx")
    assert caught.value.retry_after is None


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
async def test_429_is_transient_with_retry_after(
    vi: VerwijsindexClient, admin: httpx.AsyncClient, fmt: str
) -> None:
    # Long enough that an HTTP date, whole seconds only and read a moment after it was written, still
    # lands in a narrow band below it on a slow machine.
    wait = 60
    await admin.post(
        "/admin/faults", json={"rate_limit_rate": 1.0, "retry_after": wait, "retry_after_format": fmt}
    )
    with pytest.raises(TransientError, match="HTTP 429") as caught:
        await vi.withdraw("sig-1", IntrekkingsReden.ONTERECHT, "tx")
    assert caught.value.retry_after is not None
    assert wait - 5 <= caught.value.retry_after <= wait


@pytest.mark.parametrize("mode", ["503", "close"])
async def test_fully_down_is_transient_and_ping_tells(
    vi: VerwijsindexClient, admin: httpx.AsyncClient, mode: str
) -> None:
    assert await vi.ping()
    await admin.post("/admin/faults", json={"down": mode})
    with pytest.raises(TransientError):
        await vi.matches(None, 10, "tx")
    assert not await vi.ping()
    await admin.post("/admin/faults", json={})
    assert await vi.ping()


async def test_a_hanging_call_times_out_and_the_retry_is_idempotent(
    vi: VerwijsindexClient, admin: httpx.AsyncClient, server: SimulatorServer
) -> None:
    await admin.post("/admin/faults", json={"hang_rate": 1.0, "hang_seconds": 60})
    started = asyncio.get_running_loop().time()
    async with VerwijsindexClient(server.url, timeout=2, organisatie="halt-den-haag") as impatient:
        with pytest.raises(TransientError, match="timed out"):
            await impatient.register("sig-1", registration(), "tx-hang")
    # the client's 2 s (plus a loaded machine's delays), not the hang's 60 s
    assert asyncio.get_running_loop().time() - started < 30
    await admin.post("/admin/faults", json={})  # heal: the hung call now runs on the server
    retried = await vi.register("sig-1", registration(), "tx-retry")
    assert retried.status is SignaalStatus.ACTIEF
    assert list(server.state.signals) == ["sig-1"]
    calls = (await admin.get("/admin/calls")).json()["calls"]
    assert [c["transaction_id"] for c in calls] == ["tx-hang", "tx-retry"]
    assert calls[0]["fault"] == "hang"


async def test_permanent_errors_carry_the_reason_but_no_personal_data(vi: VerwijsindexClient) -> None:
    await vi.register("sig-1", registration(), "tx")
    with pytest.raises(PermanentError, match="HTTP 409"):
        await vi.register("sig-1", registration(org="other-org"), "tx")
    with pytest.raises(NotInIndex, match="HTTP 404"):  # the index's own answer about the signal
        await vi.withdraw("unknown", IntrekkingsReden.ONTERECHT, "tx")
    with pytest.raises(PermanentError, match="einddatum lies in the past") as caught:
        await vi.register("sig-2", registration(einddatum=today() - timedelta(days=1)), "tx")
    assert BSN not in str(caught.value) and "Sanne" not in str(caught.value)


async def test_connection_refused_is_transient() -> None:
    # bound and not listening: refused, and no other test's server can take the port meanwhile
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with VerwijsindexClient(f"http://127.0.0.1:{port}", timeout=1) as client:
            with pytest.raises(TransientError, match="connection failed"):
                await client.matches(None, 1, "tx")
            assert not await client.ping()


def vendor_answering(status: int, **body: Any) -> FastAPI:
    """A vendor that answers every call with `status` (and `body` as JSON, or plain text)."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def answer(path: str) -> Response:
        if body:
            return JSONResponse(body, status_code=status)
        return PlainTextResponse("nope", status_code=status)

    return app


def as_the_hub_sends_it() -> SignaalRegistratie:
    """The registration as the hub maps it (connectors.verwijsindex.mapping): the surname whole, "de
    Vries", with no voorvoegsel of its own."""
    body = registration()
    youth = body.jeugdige.model_copy(update={"voorvoegsel": None, "geslachtsnaam": "de Vries"})
    return body.model_copy(update={"jeugdige": youth})


SPACED_BSN, DOTTED_BSN = "999 99 0044", "999.990.044"  # BSN, as people write it


@pytest.mark.parametrize(
    ("detail", "body"),
    [
        (f"jeugdige Sanne de Vries ({BSN}) is al bekend", registration),
        # the surname part alone, and the BSN in groups: "Vries" and the number went out as they were
        (f"jeugdige Vries, S. ({SPACED_BSN}) is al bekend", as_the_hub_sends_it),
        (f"jeugdige Vries, Sanne de ({DOTTED_BSN}) is al bekend", as_the_hub_sends_it),
    ],
    ids=["whole-name", "surname-part-spaced-bsn", "surname-first-dotted-bsn"],
)
async def test_a_vendor_echoing_personal_data_is_redacted(detail: str, body: Any) -> None:
    vendor = vendor_answering(422, titel="Unprocessable", detail=detail, fouten=[])
    async with serving(vendor) as port, VerwijsindexClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(PermanentError) as caught:
            await client.register("sig-1", body(), "tx")
    message = str(caught.value)
    assert "al bekend" in message
    assert BSN not in message and "Sanne" not in message and "Vries" not in message
    for written in (SPACED_BSN, DOTTED_BSN, "0044"):
        assert written not in message, message


def test_a_surname_part_is_a_secret_but_a_tussenvoegsel_or_a_short_part_is_not() -> None:
    secrets = youth_secrets(BSN, "Sanne", "de Vries")
    assert redact("jeugdige Vries, Sanne de: de aanmelding is er al", secrets) == (
        "jeugdige […], […] de: de aanmelding is er al"
    )
    assert "Hart" in youth_secrets(BSN, "Jo", "van 't Hart") and "van" not in youth_secrets(
        BSN, "Jo", "van 't Hart"
    )
    assert {"Vermeulen", "Zwart"} <= set(youth_secrets(BSN, "Noah", "Vermeulen-Zwart"))


@pytest.mark.parametrize(("status", "kind"), [(409, PermanentError), (503, TransientError)])
async def test_a_vendor_quoting_the_youth_on_a_withdrawal_or_a_read_is_redacted(
    status: int, kind: type[Exception]
) -> None:
    """Only a registration passed the youth's names to keep out of its errors: a withdrawal's, a
    contact change's or a read's went out with the name the index quoted."""
    detail = f"signaal van Vries, Sanne de ({SPACED_BSN}) heeft een andere reden"
    vendor = vendor_answering(status, titel="Conflict", detail=detail, fouten=[])
    secrets = youth_secrets(BSN, "Sanne", "de Vries")
    contact = Contactpersoon(naam="Ilse Bakker", email="ilse@halt.nl")
    async with serving(vendor) as port, VerwijsindexClient(f"http://127.0.0.1:{port}") as client:
        calls = (
            client.withdraw("sig-1", IntrekkingsReden.ONTERECHT, "tx", secrets=secrets),
            client.change_contact("sig-1", contact, "tx", secrets=secrets),
            client.get("sig-1", "tx", secrets=secrets),
        )
        for call in calls:
            with pytest.raises(kind) as caught:
                await call
            message = str(caught.value)
            assert f"HTTP {status}" in message and "andere reden" in message, message
            for quoted in ("Vries", "Sanne", SPACED_BSN, "0044"):
                assert quoted not in message, message


async def test_a_failing_match_feed_is_told_by_its_status_alone() -> None:
    """A page is about many youths, whom the hub cannot name: the index's own text of a failed poll
    (which went to the console, the log and the feed's status) is never quoted."""
    detail = "matches van Sanne de Vries (999 99 0044) en anderen niet beschikbaar"
    for status, kind in ((500, TransientError), (400, PermanentError)):
        vendor = vendor_answering(status, titel="Fout", detail=detail, fouten=[])
        async with serving(vendor) as port, VerwijsindexClient(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(kind) as caught:
                await client.matches(None, 10, "tx")
        message = str(caught.value)
        assert message.startswith(f"verwijsindex matches: HTTP {status}: "), message
        assert "Vries" not in message and "Sanne" not in message and "beschikbaar" not in message
        assert "0044" not in message, message


async def test_an_answer_that_breaks_the_contract_names_the_fields_not_their_values() -> None:
    youth = {"bsn": BSN, "voornamen": "Sanne\x00", "geslachtsnaam": "de Vries"}
    contact = {"naam": "Sanne de Vries", "email": BSN}  # a known field holding what it must not
    vendor = vendor_answering(
        200, signaal_id="sig-1", jeugdige=youth, contactpersoon=contact, einddatum="morgen"
    )
    async with serving(vendor) as port, VerwijsindexClient(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(PermanentError) as caught:
            await client.get("sig-1", "tx")
    message = str(caught.value)
    assert message.startswith("verwijsindex get: HTTP 200 answer breaks the contract: "), message
    assert "einddatum: " in message and "contactpersoon.email: " in message
    assert "jeugdige" not in message  # a field the contract does not know is ignored, not read
    assert BSN not in message and "Sanne" not in message and "Vries" not in message


@pytest.mark.parametrize(
    ("status", "kind"), [(408, TransientError), (500, TransientError), (400, PermanentError)]
)
async def test_status_codes_map_to_error_kinds(status: int, kind: type[Exception]) -> None:
    async with (
        serving(vendor_answering(status)) as port,
        VerwijsindexClient(f"http://127.0.0.1:{port}") as client,
    ):
        with pytest.raises(kind, match=f"verwijsindex get: HTTP {status}"):
            await client.get("sig-1", "tx")


@pytest.mark.parametrize(
    "body",
    [
        {},  # a proxy's page, plain text
        {"detail": "Not Found"},  # another web application at a wrong base URL
        {"titel": "Error", "detail": "Not Found", "fouten": []},  # the index, a path it does not serve
    ],
)
async def test_a_404_that_is_not_the_index_about_the_signal_is_no_answer_about_it(
    body: dict[str, Any],
) -> None:
    """Only the index's own "not found" settles a withdrawal (the signal is not active there); any
    other 404 (a wrong base URL, a proxy) stays an error for the dead-letter topic, to be replayed."""
    async with (
        serving(vendor_answering(404, **body)) as port,
        VerwijsindexClient(f"http://127.0.0.1:{port}") as client,
    ):
        with pytest.raises(PermanentError, match="HTTP 404") as caught:
            await client.withdraw("sig-1", IntrekkingsReden.ONTERECHT, "tx")
    assert not isinstance(caught.value, NotInIndex)


def an_index_adding_a_field() -> FastAPI:
    """An index that answers by the contract, with one field more on every object it returns."""
    app = FastAPI()
    more = {"versie": 3}
    org = {"code": "halt-den-haag", "naam": "Halt Den Haag", "kvk": "12345678"}
    signaal = {
        "signaal_id": "sig-1", "status": "ACTIEF", "organisatie": org,
        "contactpersoon": {"naam": "Ilse Bakker", "email": "ilse@halt.nl", "functie": "medewerker"},
        "aangemaakt": today().isoformat(), "einddatum": (today() + timedelta(days=365)).isoformat(),
    } | more  # fmt: skip
    match = {
        "match_id": "m-1", "cursor": "c-1", "type": "CLIENTMATCH", "signaal_id": "sig-1",
        "organisatie_code": "halt-den-haag", "ontstaan_op": "2026-01-15T09:00:00+00:00",
        "tegenpartij": {
            "organisatie": {"code": "wijkteam-escamp", "naam": "Wijkteam Escamp"} | more,
            "contactpersoon": {"naam": "Kees de Wit", "email": "kees@wijkteam.nl"} | more,
        } | more,
    } | more  # fmt: skip

    @app.put("/api/v1/signalen/{signal_id}")
    async def put(signal_id: str) -> JSONResponse:
        return JSONResponse(signaal, status_code=201)

    @app.patch("/api/v1/signalen/{signal_id}")
    async def patch(signal_id: str) -> JSONResponse:
        return JSONResponse(signaal)

    @app.delete("/api/v1/signalen/{signal_id}")
    async def delete(signal_id: str) -> JSONResponse:
        ended = signaal | {"status": "INGETROKKEN_ONTERECHT", "intrekkingsreden": "ONTERECHT"}
        return JSONResponse(ended)

    @app.get("/api/v1/signalen/{signal_id}")
    async def get(signal_id: str) -> JSONResponse:
        fout = {"titel": "Not Found", "detail": "no such signal", "fouten": [], "code": "VI-404"}
        return JSONResponse(fout, status_code=404)

    @app.get("/api/v1/matches")
    async def matches() -> JSONResponse:
        return JSONResponse({"matches": [match], "volgende": "c-1", "totaal": 1})

    return app


async def test_a_field_the_index_adds_to_its_answers_is_ignored() -> None:
    """DESIGN: partner formats are parsed leniently at the edge. One field more in the index's answer
    turned a PUT or DELETE that succeeded into a PermanentError (a dead letter for a write that was
    done, and not audited), refused every match and hid the index's own 404 about a signal."""
    async with (
        serving(an_index_adding_a_field()) as port,
        VerwijsindexClient(f"http://127.0.0.1:{port}") as client,
    ):
        registered = await client.register("sig-1", registration(), "tx")
        assert registered.status is SignaalStatus.ACTIEF and registered.contactpersoon.naam == "Ilse Bakker"
        changed = await client.change_contact(
            "sig-1", Contactpersoon(naam="Ilse Bakker", email="i@halt.nl"), "tx"
        )
        assert changed.signaal_id == "sig-1"
        withdrawn = await client.withdraw("sig-1", IntrekkingsReden.ONTERECHT, "tx")
        assert withdrawn.status is SignaalStatus.INGETROKKEN_ONTERECHT
        with pytest.raises(NotInIndex, match="HTTP 404"):  # still the index's word about the signal
            await client.get("sig-1", "tx")
        page, cursor = await client.matches(None, 10, "tx")
    (match,) = page
    assert isinstance(match, Match), match
    assert (match.match_id, match.signaal_id, match.tegenpartij.contactpersoon.email, cursor) == (
        "m-1", "sig-1", "kees@wijkteam.nl", "c-1",
    )  # fmt: skip


def test_redaction() -> None:
    assert redact("BSN 999990044 van Sanne", ["Sanne"]) == "BSN […] van […]"
