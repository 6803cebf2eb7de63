"""Settings: defaults, environment names, and one clear line for a bad setting."""

from __future__ import annotations

import pytest

from hub.config import DEFAULT_DB_URL, load_settings
from hub.errors import ConfigError

GOOD_SECRET = "x" * 40


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KETENHUB_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_embedded_hub() -> None:
    s = load_settings()
    assert s.embedded_broker
    assert s.database.url == DEFAULT_DB_URL == "sqlite+aiosqlite:///./ketenhub.db"
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8000)
    assert s.smtp.host is None and s.verwijsindex.url is None


def test_nested_names_use_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("KETENHUB_DATABASE__URL", "postgresql+asyncpg://hub@db/hub")
    monkeypatch.setenv("KETENHUB_HTTP__HOST", "0.0.0.0")
    monkeypatch.setenv("KETENHUB_HTTP__PORT", "9000")
    monkeypatch.setenv("KETENHUB_SMTP__HOST", "smtp.example")
    monkeypatch.setenv("KETENHUB_SMTP__PORT", "2525")
    monkeypatch.setenv("KETENHUB_VERWIJSINDEX__URL", "https://vi.example")
    monkeypatch.setenv("KETENHUB_SECRET", GOOD_SECRET)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092" and not s.embedded_broker
    assert s.database.url.startswith("postgresql+asyncpg://")
    assert (s.http.host, s.http.port) == ("0.0.0.0", 9000)
    assert (s.smtp.host, s.smtp.port) == ("smtp.example", 2525)
    assert s.verwijsindex.url == "https://vi.example"
    assert s.secret_value() == GOOD_SECRET


def test_bad_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_HTTP__PORT", "eighty")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_HTTP__PORT:")
    assert "\n" not in str(err.value)


def test_unknown_database_driver_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_DATABASE__URL", "mysql://x")
    with pytest.raises(ConfigError, match="^KETENHUB_DATABASE__URL"):
        load_settings()


def test_secret_required_outside_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETENHUB_KAFKA__BOOTSTRAP_SERVERS", "k1:9092")
    with pytest.raises(ConfigError, match="^KETENHUB_SECRET: .*required"):
        load_settings()


@pytest.mark.parametrize("value", ["changeme", "short-secret"])
def test_placeholder_or_short_secret_refused_and_not_echoed(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("KETENHUB_SECRET", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith("KETENHUB_SECRET")
    assert value not in str(err.value)


def test_embedded_secret_is_random_and_kept(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    a = load_settings(state_dir=tmp_path)
    first = a.secret_value()
    assert len(first) >= 32 and first == load_settings(state_dir=tmp_path).secret_value()
    assert (tmp_path / "ketenhub.secret").stat().st_mode & 0o077 == 0
    other = tmp_path / "other"
    other.mkdir()
    assert load_settings(state_dir=other).secret_value() != first


def test_unknown_component_refused() -> None:
    with pytest.raises(ConfigError, match="^KETENHUB_COMPONENTS"):
        load_settings(components=["intake", "teleport"])


def test_today_is_the_dutch_calendar_day() -> None:
    from datetime import UTC, date, datetime

    from hub.clock import today

    assert today(lambda: datetime(2026, 12, 1, 22, 59, tzinfo=UTC)) == date(2026, 12, 1)
    assert today(lambda: datetime(2026, 12, 1, 23, 0, tzinfo=UTC)) == date(2026, 12, 2)  # CET, UTC+1
    assert today(lambda: datetime(2026, 7, 1, 21, 59, tzinfo=UTC)) == date(2026, 7, 1)
    assert today(lambda: datetime(2026, 7, 1, 22, 0, tzinfo=UTC)) == date(2026, 7, 2)  # CEST, UTC+2
