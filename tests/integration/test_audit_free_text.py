"""Rule 18: an audit entry records who, what, when and which objects, never free text about a person.

The audit log is append-only and kept for years: a consent withdrawal's reason, a dead letter's or a
parked row's discard reason went into it as typed (a name, a BSN), and a zorgmelding's legal basis,
which rule 21 puts on every audit entry of the zorgmelding, was any text up to 2,000 characters.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import insert, select
from typer.testing import CliRunner

from hub.cli import app
from hub.embedded import EmbeddedKafka
from hub.ops.dlq import DeadLetters
from hub.ops.dlq_records import DeadLetter
from hub.ops.parked import discard, parked_rows, release
from hub.ops.tables import dlq_actions
from hub.spine.dlq import DLQ_TOPIC
from hub.store import Store
from hub.store.tables import audit_log, outbox_parked
from schemas.bsn import is_valid_bsn
from schemas.envelope import trace_id, utcnow
from tests.conftest import TEST_SECRET
from tests.integration.test_handover_flow import CW, world

pytestmark = pytest.mark.integration
BSN = "123456782"  # passes the elfproef
# What an operator or caseworker might type as a reason: a name, a BSN, a phone number.
REASON = f"Moeder van Sam Jansen (BSN {BSN}) belde, 06-12345678: dubbel ingestuurd"


async def _audit_rows(store: Store, prefix: str = "") -> list[Any]:
    async with store.connect() as conn:
        return list(
            await conn.execute(
                select(audit_log).where(audit_log.c.action.like(f"{prefix}%")).order_by(audit_log.c.id)
            )
        )


def _no_free_text(rows: list[Any], *texts: str) -> None:
    """None of `texts` anywhere in the audit entries (objects, legal basis, user, ...)."""
    for row in rows:
        flat = json.dumps({k: v for k, v in row._mapping.items() if k != "at"}, default=str)
        for text in texts:
            assert text not in flat, (row.action, text)


async def test_a_withdrawal_reason_stays_on_the_consent_and_out_of_the_audit_log(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(17)
        consent_id = (await w.consent(rid))["consent_id"]
        r = await w.client.post(
            f"/api/v1/toestemmingen/{consent_id}/intrekking",
            json={"reason": REASON},
            headers={"X-Medewerker": CW},
        )
        assert r.status_code == 200, r.text
        assert r.json()["withdrawal_reason"] == REASON  # kept where the API shows it to whom it may
        shown = await w.client.get(f"/api/v1/toestemmingen/{consent_id}", headers={"X-Medewerker": CW})
        assert shown.json()["withdrawal_reason"] == REASON
        [entry] = await w.audit("consent.withdrawn")
        assert entry.objects == {
            "consent_id": consent_id,
            "reason_length": len(REASON),
            "handovers_withdrawn": [],
            "handovers_kept": [],
        }
        assert w.hub.store is not None
        _no_free_text(await _audit_rows(w.hub.store), REASON, BSN, "Jansen")


def _eight_digit_bsn() -> str:
    return next(f"{n:08d}" for n in range(10_000_000, 10_100_000) if is_valid_bsn(f"{n:08d}"))


async def test_a_zorgmelding_legal_basis_naming_a_person_or_not_one_line_is_refused(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        rid, _ = await w.referral(15)
        body = {
            "referral_id": rid,
            "receiver_organisation": "veilig-thuis-dh",
            "data_categories": ["PERSONALIA"],
            "summary": "Zorgen over de thuissituatie.",
        }
        eight = _eight_digit_bsn()
        refused = {
            f"meldrecht art. 5.2.6 Wmo 2015, jeugdige {BSN}": ("BSN", BSN),
            f"meldcode, BSN {eight}": ("BSN", eight),
            "meldcode, BSN 123.456.782": ("BSN", "456"),
            "meldcode, BSN 1234 56 782": ("BSN", "1234 56"),
            "meldcode stap 5\nmoeder belde": ("stuurteken", "moeder"),
            "meldcode\tstap 5": ("stuurteken", None),
            "meldcode\x00": ("stuurteken", None),
            "meldcode \x1b[2J": ("stuurteken", None),
            "meldcode\u2028stap 5": ("stuurteken", None),
            "m" * 301: ("300", None),
        }
        for basis, (says, secret) in refused.items():
            r = await w.client.post(
                "/api/v1/zorgmeldingen", json=body | {"legal_basis": basis}, headers={"X-Medewerker": CW}
            )
            assert r.status_code in (400, 422), (basis, r.status_code, r.text)
            params = r.json()["invalidParams"]
            assert [p["name"] for p in params] == ["legal_basis"], r.text
            assert says in params[0]["reason"], (basis, params)
            assert secret is None or secret not in r.text  # the value is never echoed
        listed = await w.client.get(f"/api/v1/overdrachten?referral_id={rid}", headers={"X-Medewerker": CW})
        assert listed.json() == []  # nothing refused was made

        # A law and its article, dates and numbers that are no BSN: accepted, in the audit log (rule 21)
        basis = "Wet verplichte meldcode (Stb. 2013, 142), art. 5.2.6 Wmo 2015; besluit 12-03-2024"
        # an article and a year read together as eight digits passing the elfproef were refused
        citations = ("art. 7.1.1.1 2017", "Wmo 2008 7.1.1.1", "art. 7.3.11 2021")
        for ok in (basis, "a" * 300, *citations):
            r = await w.client.post(
                "/api/v1/zorgmeldingen", json=body | {"legal_basis": ok}, headers={"X-Medewerker": CW}
            )
            assert r.status_code == 202, (ok, r.text)
        requested = [a.legal_basis for a in await w.audit("handover.requested")]
        assert requested == [basis, "a" * 300, *citations]


async def test_a_dead_letter_discard_reason_stays_on_its_action_and_out_of_the_audit_log(
    store: Store,
) -> None:
    letters = DeadLetters(store, {}, ["in.dlq.v1"], secret=TEST_SECRET)
    # a letter written before the spine made ids of names may carry one as its transaction id
    named = {DLQ_TOPIC: "in.v1", "transaction-id": "melding Sanne de Vries"}
    letter = DeadLetter("in.dlq.v1", 0, 7, 0, None, named, payload=b'{"n": 1}')
    assert await letters.discard(letter, "olga", REASON)
    async with store.connect() as conn:
        [action] = list(await conn.execute(select(dlq_actions)))
    assert (action.action, action.reason) == ("discarded", REASON)  # the reason is kept here
    [entry] = await _audit_rows(store, "dlq.")
    assert entry.action == "dlq.discarded"
    assert entry.objects == {
        "dead_letter": letter.id,
        "original_topic": "in.v1",
        "dlq_action_id": action.id,
        "reason_length": len(REASON),
    }
    assert entry.transaction_id == trace_id("melding Sanne de Vries")
    _no_free_text(await _audit_rows(store), REASON, BSN, "Jansen", "Vries")


async def _park(store: Store, n: int) -> list[int]:
    now = utcnow()
    async with store.transaction() as session:
        for i in range(n):
            await session.execute(
                insert(outbox_parked).values(
                    outbox_id=100 + i,
                    topic="hub.mail.v1",
                    key="5f" * 32,
                    value=b"x" * 10,
                    headers={"transaction-id": f"tx-{i}"},
                    message_id=f"m-{i}",
                    created_at=now,
                    parked_at=now,
                    size=10,
                    reason="larger than the brokers take",
                )
            )
    return [row.id for row in await parked_rows(store)]


async def test_a_parked_row_reason_naming_a_bsn_is_refused_and_a_plain_one_is_audited(store: Store) -> None:
    """A reason that names a BSN is refused, and nothing is done; a plain one is audited by its length,
    as a dead letter's discard is (the audit log is kept for years: a name typed into it would stay)."""
    first, second = await _park(store, 2)
    for act in (
        lambda: discard(store, first, "olga", REASON),
        lambda: release(store, second, "olga", REASON, max_message_bytes=1_000),
    ):
        with pytest.raises(ValidationError, match="looks like a BSN"):
            await act()
    assert [r.id for r in await parked_rows(store)] == [first, second]
    assert await _audit_rows(store, "outbox.") == []
    await discard(store, first, "olga", "dubbel ingestuurd door de partner")
    await release(store, second, "olga", "limiet verhoogd naar 2 MB", max_message_bytes=1_000)
    entries = await _audit_rows(store, "outbox.")
    assert [(e.action, e.objects["parked_id"], e.objects["reason_length"]) for e in entries] == [
        ("outbox.discarded", first, len("dubbel ingestuurd door de partner")),
        ("outbox.released", second, len("limiet verhoogd naar 2 MB")),
    ]
    _no_free_text(await _audit_rows(store), BSN, "dubbel ingestuurd", "limiet verhoogd")
    # the reason is kept with the row, emptied of its record, until the row's term ends
    async with store.connect() as conn:
        kept = (await conn.execute(select(outbox_parked).order_by(outbox_parked.c.id))).all()
    assert [(r.id, r.resolved, r.resolved_by, r.resolution, r.value, r.key) for r in kept] == [
        (first, "discarded", "olga", "dubbel ingestuurd door de partner", b"", None),
        (second, "released", "olga", "limiet verhoogd naar 2 MB", b"", None),
    ]
    assert await parked_rows(store) == []


def test_the_cli_refuses_a_reason_naming_a_bsn(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"

    async def seed() -> list[int]:
        store = Store(url)
        try:
            await store.migrate()
            return await _park(store, 2)
        finally:
            await store.close()

    first, second = asyncio.run(seed())
    env = {"KETENHUB_DATABASE__URL": url, "KETENHUB_SECRET": TEST_SECRET}
    runner = CliRunner()
    for command, row in (("discard", first), ("release", second)):
        refused = runner.invoke(app, ["outbox", command, str(row), "--reason", REASON], env=env)
        assert refused.exit_code == 2 and "without a BSN" in refused.output, refused.output
        assert BSN not in refused.output
    dropped = runner.invoke(app, ["outbox", "discard", str(first), "--reason", "dubbel ingestuurd"], env=env)
    assert dropped.exit_code == 0, dropped.output

    async def audited() -> list[Any]:
        store = Store(url)
        try:
            return await _audit_rows(store)
        finally:
            await store.close()

    rows = asyncio.run(audited())
    assert [(r.action, r.objects["reason_length"]) for r in rows if r.action.startswith("outbox.")] == [
        ("outbox.discarded", len("dubbel ingestuurd"))
    ]
    assert all(r.user.startswith("cli") for r in rows if r.action.startswith("outbox."))
    _no_free_text(rows, BSN)
