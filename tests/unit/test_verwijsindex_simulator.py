"""The Verwijsindex simulator's contract: idempotency, conflicts, matches, rule 12, the feed, faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.verwijsindex.sim_state import SimulatorState
from connectors.verwijsindex.simulator import create_simulator

TODAY = date(2026, 1, 15)
TX = {"Fsc-Transaction-Id": "tx-unit"}
SANNE, DAAN = "999990044", "999990068"  # siblings in population.json
LOTTE, MILAN = "999990184", "999990226"  # half-siblings: one shared parent
ZOE, BRAM = "999990275", "999990317"  # unrelated


class Clock:
    """A settable clock for expiry tests."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def body(bsn: str = SANNE, org: str = "halt-den-haag", **over: Any) -> dict[str, Any]:
    youth = {
        "bsn": bsn,
        "voornamen": "Sanne",
        "voorvoegsel": "de",
        "geslachtsnaam": "Vries",
        "geboortedatum": over.pop("geboortedatum", "2010-03-14"),
        "geslacht": "VROUW",
        "gemeente": "Den Haag",
    }
    contact = {"naam": f"Contact {org}", "email": f"contact@{org}.nl", "telefoon": "070 123 4567"}
    result = {
        "jeugdige": youth,
        "organisatie": {"code": org, "naam": org.replace("-", " ").title()},
        "contactpersoon": contact,
        "aangemaakt": TODAY.isoformat(),
        "einddatum": (TODAY + timedelta(days=365)).isoformat(),
    }
    result.update(over)
    return result


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> SimulatorState:
    return SimulatorState(clock=clock, seed=1)


@pytest.fixture
async def api(state: SimulatorState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_simulator(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://vi") as client:
        yield client


async def put(api: httpx.AsyncClient, sid: str, payload: dict[str, Any]) -> httpx.Response:
    return await api.put(f"/api/v1/signalen/{sid}", json=payload, headers=TX)


async def feed(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/api/v1/matches", params=params, headers=TX)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_register_is_idempotent_and_a_different_body_conflicts(api: httpx.AsyncClient) -> None:
    first = await put(api, "s1", body())
    again = await put(api, "s1", body())
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert first.json()["status"] == "ACTIEF"
    assert SANNE not in first.text and "Sanne" not in first.text  # the youth is not echoed
    conflict = await put(api, "s1", body(einddatum=(TODAY + timedelta(days=30)).isoformat()))
    assert conflict.status_code == 409
    assert conflict.json()["titel"] == "Conflict"
    assert (await api.get("/api/v1/signalen/s1", headers=TX)).json() == first.json()


async def test_an_eight_digit_bsn_is_the_same_youth_as_its_padded_form(api: httpx.AsyncClient) -> None:
    assert (await put(api, "s1", body("011111112"))).status_code == 201
    assert (await put(api, "s1", body("11111112"))).status_code == 200


@pytest.mark.parametrize("extra", ["reden", "delict", "screeningsresultaat", "ouders"])
async def test_fields_outside_the_whitelist_are_refused(api: httpx.AsyncClient, extra: str) -> None:
    response = await put(api, "s1", body(**{extra: "DIEFSTAL"}))
    assert response.status_code == 422
    assert response.json()["fouten"][0]["veld"] == f"body.{extra}"
    assert "DIEFSTAL" not in response.text


async def test_errors_never_echo_the_bsn_or_name(api: httpx.AsyncClient) -> None:
    bad = body("123456789")
    bad["jeugdige"]["geboortedatum"] = "Sanne"
    response = await put(api, "s1", bad)
    assert response.status_code == 422
    assert "123456789" not in response.text and "Sanne" not in response.text
    assert {f["veld"] for f in response.json()["fouten"]} == {
        "body.jeugdige.bsn",
        "body.jeugdige.geboortedatum",
    }


async def test_every_call_needs_a_transaction_id(api: httpx.AsyncClient) -> None:
    response = await api.put("/api/v1/signalen/s1", json=body())
    assert response.status_code == 422
    assert response.json()["fouten"][0]["veld"] == "header.Fsc-Transaction-Id"


@pytest.mark.parametrize(
    ("geboortedatum", "aangemaakt", "einddatum", "code"),
    [
        ("2010-03-14", "2026-01-15", "2028-01-15", 201),  # exactly created + 2 years
        ("2010-03-14", "2026-01-15", "2028-01-16", 422),  # one day more
        ("2004-02-29", "2026-01-15", "2027-03-01", 201),  # 23rd birthday of a leap-day child: 1 March
        ("2004-02-29", "2026-01-15", "2027-03-02", 422),  # after it
        ("2010-03-14", "2026-01-15", "2026-01-15", 422),  # ends when it starts
        ("2002-12-31", "2026-01-15", "2026-06-01", 422),  # already 23
        ("2027-01-01", "2026-01-15", "2026-06-01", 422),  # born after the signal
        ("2010-03-14", "2024-06-01", "2026-01-14", 422),  # ends in the past (index clock)
    ],
)
async def test_end_date_rules(
    api: httpx.AsyncClient, geboortedatum: str, aangemaakt: str, einddatum: str, code: int
) -> None:
    response = await put(
        api, "s1", body(geboortedatum=geboortedatum, aangemaakt=aangemaakt, einddatum=einddatum)
    )
    assert response.status_code == code, response.text


async def test_withdraw_needs_a_reason_and_is_idempotent(api: httpx.AsyncClient) -> None:
    await put(api, "s1", body())
    url = "/api/v1/signalen/s1"
    assert (await api.delete(url, headers=TX)).status_code == 422
    assert (await api.delete(url, params={"reden": "VERVEELD"}, headers=TX)).status_code == 422
    first = await api.delete(url, params={"reden": "ONTERECHT"}, headers=TX)
    again = await api.delete(url, params={"reden": "ONTERECHT"}, headers=TX)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["status"] == "INGETROKKEN_ONTERECHT"
    assert (await api.delete(url, params={"reden": "RISICO_WEG"}, headers=TX)).status_code == 409
    assert (
        await api.delete("/api/v1/signalen/nope", params={"reden": "RISICO_WEG"}, headers=TX)
    ).status_code == 404


async def test_change_contact_is_idempotent_and_only_on_active_signals(api: httpx.AsyncClient) -> None:
    await put(api, "s1", body())
    new = {"contactpersoon": {"naam": "Delegate", "email": "delegate@halt.nl"}}
    first = await api.patch("/api/v1/signalen/s1", json=new, headers=TX)
    again = await api.patch("/api/v1/signalen/s1", json=new, headers=TX)
    assert first.status_code == again.status_code == 200
    assert first.json()["contactpersoon"]["naam"] == "Delegate"
    assert (
        await api.patch("/api/v1/signalen/s1", json={"contactpersoon": {"naam": "X"}}, headers=TX)
    ).status_code == 422
    await api.delete("/api/v1/signalen/s1", params={"reden": "RISICO_WEG"}, headers=TX)
    other = {"contactpersoon": {"naam": "Later", "telefoon": "0612345678"}}
    assert (await api.patch("/api/v1/signalen/s1", json=other, headers=TX)).status_code == 409
    # A re-registration after a contact change is still the same registration, not a conflict.
    assert (await put(api, "s1", body())).status_code == 200


async def test_two_organisations_on_one_bsn_make_a_client_match(api: httpx.AsyncClient) -> None:
    await put(api, "halt-1", body(org="halt-den-haag"))
    await put(api, "halt-2", body(org="halt-den-haag"))  # same organisation: no match
    assert (await feed(api))["matches"] == []
    await put(api, "wt-1", body(org="wijkteam-escamp"))
    page = await feed(api)
    pairs = {(m["signaal_id"], m["tegenpartij"]["organisatie"]["code"], m["type"]) for m in page["matches"]}
    assert pairs == {
        ("halt-1", "wijkteam-escamp", "CLIENTMATCH"),
        ("halt-2", "wijkteam-escamp", "CLIENTMATCH"),
        ("wt-1", "halt-den-haag", "CLIENTMATCH"),
    }
    assert len(page["matches"]) == 4  # each of the two pairs notifies both sides
    assert SANNE not in str(page) and "Sanne" not in str(page)
    halt_only = await feed(api, organisatie="halt-den-haag")
    assert {m["signaal_id"] for m in halt_only["matches"]} == {"halt-1", "halt-2"}
    assert halt_only["matches"][0]["tegenpartij"]["contactpersoon"]["email"] == "contact@wijkteam-escamp.nl"


async def test_withdrawn_signals_do_not_match(api: httpx.AsyncClient) -> None:
    await put(api, "a", body(org="halt-den-haag"))
    await api.delete("/api/v1/signalen/a", params={"reden": "ONTERECHT"}, headers=TX)
    await put(api, "b", body(org="jeugdbescherming"))
    assert (await feed(api))["matches"] == []


@pytest.mark.parametrize(
    ("a", "b", "matched"), [(SANNE, DAAN, True), (LOTTE, MILAN, True), (ZOE, BRAM, False)]
)
async def test_youths_sharing_a_parent_make_a_family_match(
    api: httpx.AsyncClient, a: str, b: str, matched: bool
) -> None:
    await put(api, "a", body(a, org="halt-den-haag", geboortedatum="2008-01-01"))
    await put(api, "b", body(b, org="jongerenwerk", geboortedatum="2008-01-01"))
    types = {m["type"] for m in (await feed(api))["matches"]}
    assert types == ({"GEZINSMATCH"} if matched else set())


async def test_feed_pages_are_complete_ordered_and_the_cursor_never_goes_back(
    api: httpx.AsyncClient, state: SimulatorState
) -> None:
    for i, org in enumerate(["halt-den-haag", "wijkteam", "jeugdzorg", "school", "politie"]):
        await put(api, f"s{i}", body(org=org))
    expected = {m.match_id for _, m in state.feed}
    assert len(expected) == 20  # 10 pairs, both sides told
    seen: list[str] = []
    cursor: str | None = None
    cursors: list[str] = []
    while True:
        page = await feed(api, limit=3, **({"vanaf": cursor} if cursor else {}))
        assert cursor is None or page["volgende"] >= cursor
        if not page["matches"]:
            break
        assert page["volgende"] > (cursor or "")
        cursors += [m["cursor"] for m in page["matches"]]
        seen += [m["match_id"] for m in page["matches"]]
        assert page["volgende"] == page["matches"][-1]["cursor"]
        cursor = page["volgende"]
    assert len(seen) == len(set(seen)) and set(seen) == expected
    assert cursors == sorted(cursors)
    assert (await feed(api, vanaf=cursor))["volgende"] == cursor  # the end stays put
    assert (await feed(api, vanaf=cursors[5], limit=2))["matches"][0]["cursor"] == cursors[6]  # stable replay


async def test_cursors_survive_reset_and_restart(api: httpx.AsyncClient, state: SimulatorState) -> None:
    await put(api, "a", body(org="halt-den-haag"))
    await put(api, "b", body(org="wijkteam"))
    end = (await feed(api))["volgende"]
    assert (await api.post("/admin/reset")).status_code == 204
    await put(api, "c", body(org="halt-den-haag"))
    await put(api, "d", body(org="wijkteam"))
    page = await feed(api, vanaf=end)
    assert [m["signaal_id"] for m in page["matches"]] == ["c", "d"]
    older = "0000000000001-0000000099"  # from an index that ran before this one: start over
    assert len((await feed(api, vanaf=older))["matches"]) == 2
    future = "9999999999999-0000000001"
    assert (await feed(api, vanaf=future)) == {"matches": [], "volgende": future}
    bad = await api.get("/api/v1/matches", params={"vanaf": "drop table"}, headers=TX)
    assert bad.status_code == 400


async def test_signals_expire_after_their_end_date(api: httpx.AsyncClient, clock: Clock) -> None:
    end = TODAY + timedelta(days=30)
    await put(api, "a", body(org="halt-den-haag", einddatum=end.isoformat()))
    clock.now += timedelta(days=30)
    assert (await api.get("/api/v1/signalen/a", headers=TX)).json()[
        "status"
    ] == "ACTIEF"  # through its end date
    clock.now += timedelta(days=1)
    assert (await api.get("/api/v1/signalen/a", headers=TX)).json()["status"] == "VERLOPEN"
    late = (TODAY + timedelta(days=100)).isoformat()
    await put(api, "b", body(org="wijkteam", aangemaakt=clock.now.date().isoformat(), einddatum=late))
    assert (await feed(api))["matches"] == []
    withdrawn = await api.delete("/api/v1/signalen/a", params={"reden": "RISICO_WEG"}, headers=TX)
    assert (withdrawn.status_code, withdrawn.json()["status"]) == (200, "VERLOPEN")


async def test_error_rate_and_rate_limit_faults(api: httpx.AsyncClient) -> None:
    assert (await api.post("/admin/faults", json={"error_rate": 1.0})).status_code == 200
    assert (await put(api, "s1", body())).status_code == 503
    await api.post("/admin/faults", json={"rate_limit_rate": 1.0, "retry_after": 7})
    limited = await put(api, "s1", body())
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    await api.post("/admin/faults", json={"rate_limit_rate": 1.0, "retry_after_format": "http-date"})
    assert (await put(api, "s1", body())).headers["retry-after"].endswith("GMT")
    assert (await api.get("/admin/faults")).json()["rate_limit_rate"] == 1.0
    assert (await api.get("/admin/calls")).status_code == 200  # admin is never faulted


async def test_faults_for_a_number_of_calls_then_healthy(api: httpx.AsyncClient) -> None:
    await api.post("/admin/faults", json={"down": "503", "remaining": 2})
    codes = [(await put(api, "s1", body())).status_code for _ in range(3)]
    assert codes == [503, 503, 201]
    assert (await api.get("/admin/faults")).json()["down"] is None


async def test_faults_for_one_method_leave_the_others_alone_and_uncounted(api: httpx.AsyncClient) -> None:
    await api.post("/admin/faults", json={"error_rate": 1.0, "remaining": 1, "methods": ["PUT"]})
    assert (await api.get("/api/v1/status", headers=TX)).status_code == 200  # not a PUT: not counted
    assert (await put(api, "s1", body())).status_code == 503
    assert (await put(api, "s1", body())).status_code == 201  # the one PUT fault is spent
    log = (await api.get("/admin/calls")).json()["calls"]
    assert [(c["method"], c["fault"]) for c in log] == [("GET", None), ("PUT", "503"), ("PUT", None)]
    for methods in (["POST"], []):  # not a method the index has; none at all would fault nothing
        bad = await api.post("/admin/faults", json={"error_rate": 1.0, "methods": methods})
        assert bad.status_code == 422


async def test_the_index_can_be_down_for_contact_changes_alone(api: httpx.AsyncClient) -> None:
    """A PATCH (a contact change, borging) is a method of the index's too: a chaos test takes the
    index down for it alone (it was refused as no method of the index's)."""
    await put(api, "s1", body())
    assert (await api.post("/admin/faults", json={"down": "503", "methods": ["PATCH"]})).status_code == 200
    new = {"contactpersoon": {"naam": "Delegate", "email": "delegate@halt.nl"}}
    assert (await api.patch("/api/v1/signalen/s1", json=new, headers=TX)).status_code == 503
    assert (await put(api, "s2", body(bsn=ZOE))).status_code == 201  # a PUT is not faulted


async def test_a_hanging_call_runs_once_released(api: httpx.AsyncClient, state: SimulatorState) -> None:
    await api.post("/admin/faults", json={"hang_rate": 1.0, "hang_seconds": 60})
    call = asyncio.create_task(put(api, "s1", body()))
    await asyncio.wait_for(state.faults.hanging().wait(), 15)
    assert not call.done() and "s1" not in state.signals
    await api.post("/admin/faults", json={})  # healing releases it
    response = await asyncio.wait_for(call, 15)  # well under the 60 s hang
    assert response.status_code == 201 and "s1" in state.signals


async def test_added_latency(api: httpx.AsyncClient) -> None:
    await api.post("/admin/faults", json={"latency_ms": 80})
    started = asyncio.get_running_loop().time()
    assert (await api.get("/api/v1/status", headers=TX)).status_code == 200
    assert asyncio.get_running_loop().time() - started >= 0.08


async def test_calls_are_logged_with_transaction_ids(api: httpx.AsyncClient) -> None:
    await put(api, "s1", body())
    await api.put("/api/v1/signalen/s1", json=body(), headers={"Fsc-Transaction-Id": "tx-2"})
    await api.get("/api/v1/matches", headers=TX)
    log = (await api.get("/admin/calls")).json()
    assert log["total"] == 3
    assert log["per_route"] == {"PUT /api/v1/signalen/{signaalId}": 2, "GET /api/v1/matches": 1}
    assert log["per_path"]["PUT /api/v1/signalen/s1"] == 2
    assert [c["transaction_id"] for c in log["calls"]] == ["tx-unit", "tx-2", "tx-unit"]
    assert [c["status"] for c in log["calls"]] == [201, 200, 200]
    await api.post("/admin/reset")
    assert (await api.get("/admin/calls")).json()["total"] == 0


async def test_openapi_documents_the_contract_for_a_vendor(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    put_op = spec["paths"]["/api/v1/signalen/{signaalId}"]["put"]
    assert put_op["summary"] and put_op["description"]
    assert {"200", "201", "409", "422", "429", "503"} <= set(put_op["responses"])
    assert {p["name"] for p in put_op["parameters"]} == {"signaalId", "Fsc-Transaction-Id"}
    assert {"delete", "patch", "get"} <= set(spec["paths"]["/api/v1/signalen/{signaalId}"])
    assert {p["name"] for p in spec["paths"]["/api/v1/matches"]["get"]["parameters"]} >= {"vanaf", "limit"}
    assert "idempotent" in spec["info"]["description"]
    assert "additionalProperties" in str(spec["components"]["schemas"]["SignaalRegistratie"])


async def test_simulator_logs_hold_no_bsn_or_name(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await put(api, "a", body(org="halt-den-haag"))
    await put(api, "b", body(org="wijkteam"))
    await api.delete("/api/v1/signalen/a", params={"reden": "ONTERECHT"}, headers=TX)
    assert caplog.records
    assert SANNE not in caplog.text and "Sanne" not in caplog.text


def test_canonical_signal_maps_to_the_contract_and_matches_back() -> None:
    from connectors.verwijsindex.contract import Match, Organisatie
    from connectors.verwijsindex.mapping import canonical_match, registratie_van
    from schemas.caseworker import ContactDetails
    from schemas.signal import SignalYouth, VerwijsindexSignal

    signal = VerwijsindexSignal(
        signal_id="sig-1",
        youth=SignalYouth(
            bsn=SANNE,
            given_names="Sanne",
            surname="de Vries",
            birth_date=date(2010, 3, 14),
            municipality="Den Haag",
        ),
        organisation="Halt Den Haag",
        caseworker=ContactDetails(name="Els Bos", organisation="Halt Den Haag", email="e.bos@halt.nl"),
        created=TODAY,
        end_date=TODAY + timedelta(days=365),
    )
    reg = registratie_van(signal, Organisatie(code="halt-den-haag", naam="Halt Den Haag"))
    assert reg.jeugdige.bsn == SANNE and reg.contactpersoon.email == "e.bos@halt.nl"
    assert set(reg.model_dump()) == {"jeugdige", "organisatie", "contactpersoon", "aangemaakt", "einddatum"}
    entry = Match.model_validate(
        {
            "match_id": "m-1",
            "cursor": "0000000000001-0000000001",
            "type": "GEZINSMATCH",
            "signaal_id": "sig-1",
            "organisatie_code": "halt-den-haag",
            "tegenpartij": {
                "organisatie": {"code": "wijkteam", "naam": "Wijkteam Escamp"},
                "contactpersoon": {"naam": "Ali", "telefoon": "0612345678"},
            },
            "ontstaan_op": "2026-01-15T09:00:00Z",
        }
    )
    match = canonical_match(entry)
    assert (match.signal_id, match.type.value, match.counterparts[0].organisation) == (
        "sig-1",
        "GEZINSMATCH",
        "Wijkteam Escamp",
    )
