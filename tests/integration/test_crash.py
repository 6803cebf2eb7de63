"""SIGKILL at the worst moments: nothing lost, nothing doubled."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.embedded import EmbeddedKafka
from hub.store import Store
from hub.store.tables import audit_log
from schemas.envelope import Envelope
from tests.conftest import make_settings
from tests.helpers.hubs import IN, OUT, echo_component, running_hub
from tests.helpers.kafka import produce, read_topic

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run_until_killed(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.crash", *args],
        cwd=ROOT,
        timeout=60,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


async def _effect_count(db_url: str) -> int:
    store = Store(db_url)
    try:
        async with store.connect() as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).select_from(audit_log).where(audit_log.c.action == "test.effect")
                    )
                ).scalar_one()
            )
    finally:
        await store.close()


async def test_outbox_message_committed_before_a_crash_is_published_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    settings = make_settings(kafka, db_url, unique)
    message = Envelope(type="Test", payload={"n": 1})
    _run_until_killed(
        "commit-then-die", db_url, settings.kafka.topic_prefix + OUT.name, message.model_dump_json()
    )
    async with running_hub(settings) as hub:
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=1, settle_s=1.0)
    assert [Envelope.from_bytes(r.value).message_id for r in out] == [message.message_id]


async def test_consumer_killed_before_offset_commit_has_effect_once(
    kafka: EmbeddedKafka, db_url: str, unique: str
) -> None:
    settings = make_settings(kafka, db_url, unique)
    message = Envelope(type="Test", payload={"n": 5})
    prefix = settings.kafka.topic_prefix
    await produce(kafka.bootstrap, prefix + IN.name, [(b"youth-a", message.to_bytes(), message.headers())])
    _run_until_killed("consume-then-die", _json(settings))
    assert await _effect_count(db_url) == 1  # the effect was committed before the crash
    async with running_hub(settings, echo_component) as hub:
        out = await read_topic(kafka.bootstrap, hub.topic(OUT.name), expect=1, settle_s=2.0)
    assert [Envelope.from_bytes(r.value).payload["n"] for r in out] == [5]
    assert await _effect_count(db_url) == 1


def _json(settings: object) -> str:
    import json

    from pydantic import BaseModel

    assert isinstance(settings, BaseModel)
    data = settings.model_dump(mode="json")
    data["secret"] = settings.secret.get_secret_value() if settings.secret else None  # type: ignore[attr-defined]
    return json.dumps(data)
