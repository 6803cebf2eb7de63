"""Rule 20: a subject-access export of everything the hub holds and disclosed about one BSN."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from hub.embedded import EmbeddedKafka
from hub.handovers.tables import receiver_deliveries
from hub.intake.tables import referrals
from hub.ops.auth import add_operator
from hub.store.tables import audit_log
from tests.helpers.kafka import read_topic, wait_for
from tests.integration.test_handover_flow import World, world

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"


async def _bsn(w: World, referral_id: str) -> str:
    assert w.hub.store is not None
    async with w.hub.store.connect() as conn:
        return str(
            (await conn.execute(select(referrals.c.bsn).where(referrals.c.id == referral_id))).scalar()
        )


async def _logged_in(w: World, name: str, role: str) -> httpx.AsyncClient:
    assert w.hub.store is not None
    await add_operator(w.hub.store, name, PASSWORD, role)
    client = httpx.AsyncClient(transport=w.client._transport, base_url="http://hub")
    r = await client.post("/ops/login", json={"username": name, "password": PASSWORD})
    assert r.status_code in (200, 303), r.text
    return client


async def test_the_export_holds_what_the_hub_holds_and_disclosed_about_one_bsn_and_is_audited(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    async with world(kafka, db_url, unique) as w:
        assert w.hub.store is not None
        rid, key = await w.referral(17)
        other_rid, other_key = await w.referral(15)
        bsn = await _bsn(w, rid)
        consent = await w.consent(rid, recipient_organisations=["jongerenwerk-dh", "jeugdhulp-dh"])
        delivered = await w.handover(rid)
        await wait_for(lambda: len(w.receiver.handovers()) == 1)
        # a second reader of the jeugdhulp topic: the handover to it becomes a dead letter
        async with w.hub.store.transaction() as session:
            await session.execute(
                insert(receiver_deliveries).values(
                    organisation="jeugdhulp-rijswijk", receiver_type="JEUGDHULP", mode="kafka", active=True
                )
            )
        dead = await w.handover(rid, org="jeugdhulp-dh", data_categories=["PERSONALIA"])
        dlq = w.hub.topic("handover.dispatch.dlq.v1")
        assert len(await read_topic(kafka.bootstrap, dlq, expect=1, settle_s=0.5)) == 1

        async def disclosed() -> bool:
            return (await w.status(delivered))["delivered_at"] is not None

        await wait_for(disclosed)

        operator = await _logged_in(w, "otto", "operator")
        officer = await _logged_in(w, "petra", "privacy_officer")
        try:
            refused = await operator.post("/ops/api/inzage", json={"bsn": bsn})
            assert refused.status_code == 403
            for wrong in ("123456789", "12345678X", "1234567890", ""):
                bad = await officer.post("/ops/api/inzage", json={"bsn": wrong})
                assert bad.status_code in (400, 422), (wrong, bad.status_code, bad.text)
                assert wrong not in bad.text or not wrong
            answer = await officer.post("/ops/api/inzage", json={"bsn": bsn})
            assert answer.status_code == 200, answer.text
            doc = answer.json()
        finally:
            await operator.aclose()
            await officer.aclose()

        assert doc["bsn"] == bsn and doc["youth_key"] == key and doc["incomplete"] == []
        assert [r["id"] for r in doc["referrals"]] == [rid]
        assert doc["referrals"][0]["referral"]["youth"]["bsn"] == bsn  # what is held, as held
        assert [c["id"] for c in doc["consents"]] == [consent["consent_id"]]
        assert sorted(h["id"] for h in doc["handovers"]) == sorted([delivered, dead])
        assert [d["id"].rsplit(":", 2)[0] for d in doc["dead_letters"]] == [dlq]
        assert doc["dead_letters"][0]["payload"]["payload"]["handover_id"] == dead
        actions = {a["action"] for a in doc["audit"]}
        assert {"consent.recorded", "handover.sent", "handover.disclosed"} <= actions
        assert doc["counts"]["audit"] == len(doc["audit"]) and doc["counts"]["referrals"] == 1
        text = json.dumps(doc)
        assert other_rid not in text and other_key not in text  # nothing of another youth

        async with w.hub.store.connect() as conn:
            rows = list(
                await conn.execute(
                    select(audit_log.c.user, audit_log.c.youth_key, audit_log.c.objects).where(
                        audit_log.c.action == "subject_access.exported"
                    )
                )
            )
        [(user, youth, objects)] = rows
        assert user == "petra" and youth == key
        assert objects["counts"]["referrals"] == 1 and objects["complete"] is True
        assert bsn not in json.dumps(objects)


async def _letters_with(bootstrap: str, topic: str, records: list[tuple[bytes, dict[str, Any]]]) -> list[str]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        ids = []
        for key, payload in records:
            sent = await producer.send_and_wait(topic, json.dumps(payload).encode(), key=key)
            ids.append(f"{topic}:{sent.partition}:{sent.offset}")
        return ids
    finally:
        await producer.stop()


def test_the_command_line_export_reads_the_bsn_from_stdin_and_writes_a_private_file(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str
) -> None:
    from hub.audit import AuditEntry, write_audit
    from hub.cli import app
    from hub.store import Store
    from schemas.pseudonym import youth_key as pseudonym
    from tests.conftest import TEST_SECRET
    from tests.integration.test_ops_cli import _a_dlq_topic, _dlq_env, _write_letters

    bsn, other = "111222333", "123456782"
    key = pseudonym(TEST_SECRET, bsn)
    db = tmp_path / "hub.db"

    async def audited_read() -> None:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            await store.migrate()
            async with store.transaction() as session:
                for youth in (key, pseudonym(TEST_SECRET, other)):
                    entry = AuditEntry(action="referral.read", user="cw-1", youth_key=youth)
                    await write_audit(session, entry, transaction_id=None, system="test")
        finally:
            await store.close()

    asyncio.run(audited_read())
    topic = _a_dlq_topic(unique)
    mine, _ = asyncio.run(_write_letters(kafka.bootstrap, topic, [(bsn.encode(), {}), (other.encode(), {})]))
    # a partner's record naming the youth's BSN as a number; another youth's whose parent's phone
    # number holds the BSN's digits
    as_number, not_theirs = asyncio.run(
        _letters_with(
            kafka.bootstrap,
            topic,
            [
                (b"pv-1", {"verdachte": {"bsn": int(bsn)}}),
                (b"pv-2", {"verdachte": {"bsn": other}, "ouder": {"telefoon": f"0{bsn}9"}}),
            ],
        )
    )
    env, runner = _dlq_env(db, kafka.bootstrap, unique), CliRunner()
    out = tmp_path / "inzage.json"
    made = runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env)
    assert made.exit_code == 0, made.output
    assert "export made (referrals 0" in made.output and "incomplete" not in made.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert sorted(d["id"] for d in doc["dead_letters"]) == sorted([mine, as_number])
    assert not_theirs not in json.dumps(doc)
    assert [(a["action"], a["user"]) for a in doc["audit"]] == [("referral.read", "cw-1")]

    wrong = runner.invoke(app, ["inzage"], input="123456789\n", env=env)
    assert wrong.exit_code == 2 and "not a BSN" in wrong.output and "123456789" not in wrong.output

    embedded = {k: v for k, v in env.items() if k != "KETENHUB_KAFKA__BOOTSTRAP_SERVERS"}
    partial = runner.invoke(app, ["inzage"], input=f"{bsn}\n", env=embedded)
    assert partial.exit_code == 0 and "incomplete: dead_letters" in partial.output, partial.output

    async def exports() -> list[Any]:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            async with store.connect() as conn:
                query = select(audit_log.c.user, audit_log.c.youth_key, audit_log.c.objects).where(
                    audit_log.c.action == "subject_access.exported"
                )
                return list(await conn.execute(query))
        finally:
            await store.close()

    rows = asyncio.run(exports())
    assert [(u.startswith("cli"), y, o["complete"]) for u, y, o in rows] == [
        (True, key, True),
        (True, key, False),
    ]


def _exports_audited(db: Path) -> int:
    from hub.store import Store

    async def count() -> int:
        store = Store(f"sqlite+aiosqlite:///{db}")
        try:
            await store.migrate()
            async with store.connect() as conn:
                query = select(audit_log.c.id).where(audit_log.c.action == "subject_access.exported")
                return len((await conn.execute(query)).all())
        finally:
            await store.close()

    return asyncio.run(count())


def test_an_export_file_that_cannot_be_written_is_refused_before_the_export_and_none_is_left_half(
    tmp_path: Path,
) -> None:
    """`--out` into a missing directory ended in a FileNotFoundError traceback, onto a directory in an
    IsADirectoryError that left `<dir>.part` with the BSN on disk; both after the export was audited.
    A `.part` file there already kept its mode (0644) and a symlink by that name was followed."""
    from hub.cli import app
    from tests.conftest import TEST_SECRET

    bsn, db, runner = "111222333", tmp_path / "hub.db", CliRunner()
    env = {"KETENHUB_DATABASE__URL": f"sqlite+aiosqlite:///{db}", "KETENHUB_SECRET": TEST_SECRET}
    exports = tmp_path / "exports"
    exports.mkdir()
    for out, says in (
        (tmp_path / "missing" / "x.json", "No such file or directory"),
        (exports, "Is a directory"),
    ):
        refused = runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env)
        assert refused.exit_code == 2, refused.output
        assert refused.exception is None or isinstance(refused.exception, SystemExit), refused.exception
        assert refused.output == f"ketenhub: cannot write the export to {out}: {says}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]  # no database, no .part
    assert _exports_audited(db) == 0

    # written over a file readable by all: the export is the owner's alone, and nothing else is left
    out, elsewhere = exports / "inzage.json", tmp_path / "elsewhere.json"
    out.write_text("old")
    out.chmod(0o644)
    made = runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env)
    assert made.exit_code == 0, made.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and json.loads(out.read_text())["bsn"] == bsn
    assert [p.name for p in exports.iterdir()] == ["inzage.json"]
    # a symlink where the old code put its partial file, or in the file's place: never written through
    elsewhere.write_text("someone else's")
    (exports / "inzage.json.part").symlink_to(elsewhere)
    assert runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env).exit_code == 0
    (exports / "inzage.json.part").unlink()
    out.unlink()
    out.symlink_to(elsewhere)
    assert runner.invoke(app, ["inzage", "--out", str(out)], input=f"{bsn}\n", env=env).exit_code == 0
    assert not out.is_symlink() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert elsewhere.read_text() == "someone else's"
    assert _exports_audited(db) == 3

    # the disk full while writing: said so, and no part of the export is left on disk
    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    with patch("os.fsync", full):
        failed = runner.invoke(
            app, ["inzage", "--out", str(exports / "full.json")], input=f"{bsn}\n", env=env
        )
    assert failed.exit_code == 1 and "No space left on device" in failed.output, failed.output
    assert bsn not in failed.output
    assert sorted(p.name for p in exports.iterdir()) == ["inzage.json"]
