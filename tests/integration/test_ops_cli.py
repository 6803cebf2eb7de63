"""`ketenhub operators add`, `ketenhub dlq list` and `ketenhub topics` against a real broker and database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from hub.embedded import EmbeddedKafka
from hub.ops.auth import login
from hub.store import Store
from tests.conftest import TEST_SECRET
from tests.integration.test_ops_lag import refusing_address

pytestmark = pytest.mark.integration


def test_operator_added_from_stdin_can_log_in(kafka: EmbeddedKafka, tmp_path: Path, unique: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    env = {
        "KETENHUB_DATABASE__URL": url,
        "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        "KETENHUB_KAFKA__TOPIC_PREFIX": f"t{unique}.",
        "KETENHUB_SECRET": TEST_SECRET,
    }
    runner = CliRunner()
    added = runner.invoke(
        app,
        ["operators", "add", "--username", "olga", "--role", "operator", "--password-stdin"],
        input="correct horse battery\n",
        env=env,
    )
    assert added.exit_code == 0, added.output
    assert "olga (operator)" in added.output
    bad = runner.invoke(
        app, ["operators", "add", "--username", "x", "--role", "root", "--password-stdin"], env=env
    )
    assert bad.exit_code == 2

    async def check() -> str | None:
        store = Store(url)
        try:
            return await login(store, TEST_SECRET, "olga", "correct horse battery")
        finally:
            await store.close()

    assert asyncio.run(check()) is not None
    listed = runner.invoke(app, ["dlq", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    health = runner.invoke(app, ["topics"], env=env)
    assert health.exit_code == 0, health.output
    assert "DLQ topic" in health.output


def test_topics_says_which_brokers_did_not_answer(tmp_path: Path) -> None:
    """Brokers that cannot be reached gave a traceback of the Kafka client; now a line that says so."""
    with refusing_address() as refused:
        env = {
            "KETENHUB_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": refused,
            "KETENHUB_SECRET": TEST_SECRET,
        }
        result = CliRunner().invoke(app, ["topics"], env=env)
    assert result.exit_code == 1, result.output
    assert "ketenhub: lag not measured: " in result.output and "Unable to bootstrap" in result.output
    assert "KETENHUB_KAFKA__BOOTSTRAP_SERVERS" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
