"""`ketenhub partners add|list|rotate-key|disable|enable` as an operator runs them, on a SQLite database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from hub.partners.registry import authenticate
from hub.store import Store
from hub.store.tables import audit_log

pytestmark = pytest.mark.e2e
KETENHUB = str(Path(sys.executable).with_name("ketenhub"))


def _run(url: str, *args: str, os_user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
    env["KETENHUB_DATABASE__URL"] = url
    if os_user is not None:  # the login name getpass reads first
        env["LOGNAME"] = os_user
    return subprocess.run(
        [KETENHUB, "partners", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _works(url: str, key: str) -> bool:
    async def check() -> bool:
        store = Store(url)
        try:
            async with store.transaction() as session:
                return await authenticate(session, key) is not None
        finally:
            await store.close()

    return asyncio.run(check())


def test_add_list_and_rotate(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    added = _run(url, "add", "--name", "politie-den-haag", "--type", "politie")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    assert key.startswith("kh_") and _works(url, key)

    again = _run(url, "add", "--name", "politie-den-haag", "--type", "boa")
    assert again.returncode == 1 and "already exists" in again.stderr

    listed = _run(url, "list")
    assert listed.returncode == 0
    header, row = listed.stdout.strip().splitlines()[:2]
    assert header.split()[:2] == ["NAME", "TYPE"]
    assert row.split()[:3] == ["politie-den-haag", "politie", key.split("_")[1]]
    assert key not in listed.stdout  # the key is shown once, at creation

    rotated = _run(url, "rotate-key", "politie-den-haag")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key != key and _works(url, new_key) and not _works(url, key)
    assert _run(url, "rotate-key", "nobody").returncode == 1

    # revoked: the key is refused, the partner listed as inactive; let in again with the same key
    disabled = _run(url, "disable", "politie-den-haag")
    assert disabled.returncode == 0 and "disabled" in disabled.stdout, disabled.stderr
    assert not _works(url, new_key)
    assert _run(url, "list").stdout.strip().splitlines()[1].split()[-1] == "no"
    assert _run(url, "enable", "politie-den-haag").returncode == 0 and _works(url, new_key)
    assert _run(url, "disable", "nobody").returncode == 1


def test_every_change_is_audited_under_the_operating_system_user(tmp_path: Path) -> None:
    """The partner commands audited their changes as "cli", whoever ran them; the ops commands say
    "cli:<user>". Now every partner change names its operator as well."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    steps = [
        ("add", "--name", "boa-den-haag", "--type", "boa", "--kafka-source", "connector-boa"),
        ("rotate-key", "boa-den-haag"),
        ("disable", "boa-den-haag"),
        ("enable", "boa-den-haag"),
        ("set-kafka-source", "boa-den-haag", "--none"),
        ("delivery", "Wijkteam Centrum", "--type", "wijkteam", "--kafka"),
    ]
    for step in steps:
        done = _run(url, *step, os_user="olaf")
        assert done.returncode == 0, (step, done.stderr)

    async def audited() -> list[tuple[str, str]]:
        store = Store(url)
        try:
            async with store.read() as session:
                rows = await session.execute(
                    select(audit_log.c.action, audit_log.c.user).order_by(audit_log.c.id)
                )
                return [(r.action, r.user) for r in rows]
        finally:
            await store.close()

    rows = asyncio.run(audited())
    assert len(rows) >= len(steps) and "receiver.delivery_set" in {a for a, _ in rows}, rows
    assert {u for _, u in rows} == {"cli:olaf"}, rows


def test_receiver_delivery_by_webhook_or_topic(tmp_path: Path) -> None:
    from hub.handovers.receivers import receiver_delivery
    from schemas.handover import ReceiverType

    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    hooked = _run(url, "delivery", "Jongerenwerk Escamp", "--type", "jongerenwerk",
                  "--webhook", "https://jw.example.nl/ketenhub")  # fmt: skip
    assert hooked.returncode == 0, hooked.stderr
    secret = hooked.stdout.strip().splitlines()[-1]
    assert len(secret) >= 32
    plain = _run(
        url, "delivery", "Wijkteam Centrum", "--type", "wijkteam", "--webhook", "http://wt.example.nl/"
    )
    assert plain.returncode == 2 and "https" in plain.stderr  # no plain http to a real host
    both = _run(url, "delivery", "Wijkteam Centrum", "--type", "wijkteam")
    assert both.returncode == 2 and "exactly one" in both.stderr
    topic = _run(url, "delivery", "Wijkteam Centrum", "--type", "wijkteam", "--kafka")
    assert topic.returncode == 0 and "handover.outbound.wijkteam.v1" in topic.stdout
    assert "handover.answers.wijkteam.v1" in topic.stdout  # where it answers
    # a second wijkteam on that topic would read the first one's handovers
    second = _run(url, "delivery", "Wijkteam Escamp", "--type", "wijkteam", "--kafka")
    assert second.returncode == 1 and "already read by 'Wijkteam Centrum'" in second.stderr
    assert "Traceback" not in second.stderr
    again = _run(url, "delivery", "Wijkteam Centrum", "--type", "wijkteam", "--kafka")
    assert again.returncode == 0  # its own settings made again

    async def stored() -> tuple[object, object]:
        store = Store(url)
        try:
            async with store.read() as session:
                return (await receiver_delivery(session, "Jongerenwerk Escamp"),
                        await receiver_delivery(session, "Wijkteam Centrum"))  # fmt: skip
        finally:
            await store.close()

    jw, wt = asyncio.run(stored())
    assert jw.mode == "webhook" and jw.secret == secret and jw.receiver_type is ReceiverType.JONGERENWERK
    assert wt.mode == "kafka" and wt.url is None
    assert asyncio.run(_delivery_of(url, "Wijkteam Escamp")) is None  # the refused one was not stored


async def _delivery_of(url: str, organisation: str) -> object:
    from hub.handovers.receivers import receiver_delivery

    store = Store(url)
    try:
        async with store.read() as session:
            return await receiver_delivery(session, organisation)
    finally:
        await store.close()


def test_a_partner_claims_its_kafka_connectors_source(tmp_path: Path) -> None:
    """Rule 7 across channels: `--kafka-source` / `set-kafka-source` say which connector speaks for a
    partner; a source is one partner's, the hub's default source is no name, a used claim stands."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    for command, option in (("add", "--kafka-source"), ("set-kafka-source", "--none")):
        shown = _run(url, command, "--help")
        assert shown.returncode == 0 and option in shown.stdout and "referral.received.v1" in shown.stdout

    added = _run(
        url, "add", "--name", "wijkteam-escamp", "--type", "wijkteam", "--kafka-source", "wt-connector"
    )
    assert added.returncode == 0, added.stderr
    assert "speaks for Kafka source 'wt-connector'" in added.stdout
    assert added.stdout.strip().splitlines()[-1].startswith("kh_")  # the key is still the last line
    header, row = _run(url, "list").stdout.strip().splitlines()
    assert "KAFKA SOURCE" in header and row.split()[-2:] == ["wt-connector", "yes"]

    taken = _run(
        url,
        "add",
        "--name",
        "jongerenwerk-escamp",
        "--type",
        "jongerenwerk",
        "--kafka-source",
        "wt-connector",
    )
    assert taken.returncode == 1 and "Traceback" not in taken.stderr
    assert "source 'wt-connector' is claimed by partner 'wijkteam-escamp'" in taken.stderr
    assert "set-kafka-source wijkteam-escamp --none" in taken.stderr  # what to do if it is a mistake
    assert len(_run(url, "list").stdout.strip().splitlines()) == 2  # the refused partner was not added

    assert _run(url, "add", "--name", "boa-dh", "--type", "boa").returncode == 0
    clash = _run(url, "set-kafka-source", "boa-dh", "wt-connector")
    assert clash.returncode == 1 and "claimed by partner 'wijkteam-escamp'" in clash.stderr
    default = _run(url, "set-kafka-source", "boa-dh", "ketenhub")
    assert default.returncode == 1 and "default source, which the intake refuses" in default.stderr
    both = _run(url, "set-kafka-source", "boa-dh", "boa-connector", "--none")
    assert both.returncode == 2 and "exactly one of SOURCE or --none" in both.stderr
    # the police may claim a connector (its referrals are then theirs); a partner that refers nobody may not
    police = _run(url, "add", "--name", "politie-dh", "--type", "politie", "--kafka-source", "pol")
    assert police.returncode == 0, police.stderr
    receiver = _run(url, "add", "--name", "jeugdhulp-dh", "--type", "jeugdhulp", "--kafka-source", "jh")
    assert receiver.returncode == 1 and "only a referring partner" in receiver.stderr
    assert _run(url, "set-kafka-source", "nobody", "x").returncode == 1

    assert _run(url, "set-kafka-source", "boa-dh", "boa-connector").returncode == 0
    released = _run(url, "set-kafka-source", "boa-dh", "--none")  # nothing came through it yet
    assert released.returncode == 0 and "speaks for no Kafka connector (was boa-connector)" in released.stdout

    # what the connector sent before the claim keeps its own key: the claim can still be released
    asyncio.run(_referral_from(url, "kafka:wt-connector", "WT-1"))
    before = _run(url, "set-kafka-source", "wijkteam-escamp", "--none")
    assert before.returncode == 0, before.stderr
    again = _run(url, "set-kafka-source", "wijkteam-escamp", "wt-connector")  # its own claim, made again
    assert again.returncode == 0 and "1 referral(s) it sent before count as this partner's" in again.stdout
    # one that came in through the claim, as the intake stores it (the partner's key and id, on the
    # Kafka channel): it stands
    key = partner_key_of(url, "wijkteam-escamp")
    asyncio.run(_referral_from(url, key, "WT-2", partner_id=key.removeprefix("partner:")))
    used = _run(url, "set-kafka-source", "wijkteam-escamp", "--none")
    assert used.returncode == 1 and "1 referral(s) came in through source 'wt-connector'" in used.stderr


def partner_key_of(url: str, name: str) -> str:
    """The rule 7 key of a partner's referrals: `partner:<its id>`."""
    from sqlalchemy import select

    from hub.partners.tables import partners

    async def key() -> str:
        store = Store(url)
        try:
            async with store.read() as session:
                found = await session.execute(select(partners.c.id).where(partners.c.name == name))
                return f"partner:{found.scalar_one()}"
        finally:
            await store.close()

    return asyncio.run(key())


async def _referral_from(
    url: str, referrer_key: str, case_reference: str, partner_id: str | None = None
) -> None:
    from sqlalchemy import insert

    from hub.intake.tables import referrals
    from schemas.envelope import utcnow

    store = Store(url)
    try:
        async with store.transaction() as session:
            await session.execute(
                insert(referrals).values(
                    id=case_reference,
                    referrer_key=referrer_key,
                    partner_id=partner_id,
                    case_reference=case_reference,
                    referrer_type="PREVENTIEF",
                    channel="kafka",
                    youth_key="a" * 64,
                    bsn="111222333",
                    track="PREVENTIEF",
                    outcome="ACCEPTED",
                    referral={},
                    decision={},
                    transaction_id="tx",
                    received_at=utcnow(),
                )
            )
    finally:
        await store.close()
