"""The app's lifespan when its hub cannot start: what had started is stopped, nothing left open."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest

from hub.app import create_app
from hub.embedded import EmbeddedKafka
from hub.errors import ConfigError
from hub.runtime import Hub
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def _cannot_be_set_up(_hub: Hub) -> None:
    raise ConfigError("a component that cannot be set up")


async def _start_that_fails(kafka: EmbeddedKafka, tmp_path: Path, unique: str) -> str:
    """The lifespan of an app whose hub fails in start-up, after its producer connected; what it said."""
    settings = make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", unique)
    settings = settings.model_copy(update={"components": ["intake"]})
    app = create_app(settings, hub=Hub(settings, registrars={"intake": [_cannot_be_set_up]}))
    try:
        async with app.router.lifespan_context(app):
            pass
    except ConfigError as exc:
        return str(exc)
    return "started"


async def test_a_hub_that_fails_to_start_is_stopped(
    kafka: EmbeddedKafka, tmp_path: Path, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lifespan did not stop a hub whose start failed: its producer was left connected, and
    reported as "Unclosed AIOKafkaProducer" when it was collected."""
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        assert await _start_that_fails(kafka, tmp_path, unique) == "a component that cannot be set up"
        gc.collect()
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()], caplog.text
