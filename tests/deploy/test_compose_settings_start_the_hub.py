"""The compose file's settings are the ones the hub reads: each hub service starts with them.

No container engine runs here, so each service's command runs as a local process with the
environment compose would give it. Only what points at other containers is swapped for what runs
on this machine: the broker (the test tansu, which speaks no SASL, so PLAINTEXT and one replica),
PostgreSQL, the SMTP server, the Verwijsindex, and the HTTP port. Everything else is taken as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from connectors.verwijsindex.sim_server import SimulatorServer
from hub.config import load_settings
from hub.embedded import EmbeddedKafka, free_port
from tests.helpers.compose import with_secret_files
from tests.helpers.procs import KETENHUB
from tests.integration.test_mail_delivery import smtp_sink

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yaml"
HUB_SERVICES = ("intake", "routing", "verwijsindex", "mail", "api")
_VAR = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")
TEST_VALUES = {  # what deploy/.env would hold
    "VERWIJSINDEX_URL": "http://verwijsindex-sim:8081",
}
SECRET = "compose-test-secret-that-is-long-enough-0123456789"  # deploy/secrets/ketenhub-secret


def _substitute(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, with TEST_VALUES as the .env file."""

    def one(m: re.Match[str]) -> str:
        name, whole = m.group(1), m.group(0)
        if name in TEST_VALUES:
            return TEST_VALUES[name]
        if ":-" in whole:
            return whole.split(":-", 1)[1].rstrip("}")
        raise AssertionError(f"{name} has no default and no test value")

    return _VAR.sub(one, value)


def _secret_value(secret: str, database_password: str | None = None) -> str:
    """What deploy/secrets/<secret> would hold."""
    if secret == "ketenhub-secret":
        return SECRET
    if secret == "postgres-password" and database_password is not None:
        return database_password
    return f"pw-{secret}"


def service_environment(
    name: str, secrets: Path, database_password: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command and KETENHUB_* environment compose gives a hub service; the secrets it mounts are
    files under `secrets` (the database's password `database_password`, when given)."""
    service: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"][name]
    env = {k: _substitute(str(v)) for k, v in (service.get("environment") or {}).items()}
    files = with_secret_files(env, secrets, lambda s: _secret_value(s, database_password))
    return [str(c) for c in service["command"]], files


def test_every_hub_service_environment_is_valid_settings(tmp_path: Path) -> None:
    for name in HUB_SERVICES:
        _, env = service_environment(name, tmp_path / name)
        saved = dict(os.environ)
        try:
            os.environ.update(env)
            settings = load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        assert settings.kafka.sasl_username == f"ketenhub-{name}"
        assert settings.kafka.replication_factor == 3 and settings.kafka.security_protocol == "SASL_PLAINTEXT"
        assert settings.database.url.startswith("postgresql+asyncpg://ketenhub:")
        assert not settings.embedded_broker and settings.smtp.host == "maildev"


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer() as running:
        yield running


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("name", HUB_SERVICES)
async def test_each_hub_service_starts_with_its_compose_settings(
    name: str, kafka: EmbeddedKafka, db_url: str, unique: str, tmp_path: Path, simulator: SimulatorServer
) -> None:
    # The test's PostgreSQL as compose gives it: the URL without a password, the password a file.
    url = make_url(db_url)
    command, env = service_environment(name, tmp_path / "secrets", url.password)
    bare_url = url.set(password=None).render_as_string(hide_password=False)
    port = free_port()
    async with smtp_sink() as sink:
        local = {  # only the addresses of other containers, and what tansu cannot do
            "KETENHUB_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
            "KETENHUB_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT",
            "KETENHUB_KAFKA__REPLICATION_FACTOR": "1",
            "KETENHUB_KAFKA__TOPIC_PREFIX": f"t{unique}.",
            "KETENHUB_DATABASE__URL": bare_url,
            "KETENHUB_SMTP__HOST": "127.0.0.1",
            "KETENHUB_SMTP__PORT": str(sink.port),
            "KETENHUB_VERWIJSINDEX__URL": simulator.url,
            "KETENHUB_HTTP__HOST": "127.0.0.1",
            "KETENHUB_HTTP__PORT": str(port),
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith("KETENHUB_")}
        log = (tmp_path / "hub.log").open("wb")
        proc = subprocess.Popen([KETENHUB, *command], cwd=tmp_path, env={**base, **env, **local},
                                stdout=log, stderr=log)  # fmt: skip
        try:
            checks = None
            async with httpx.AsyncClient(timeout=2) as client:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and checks is None:
                    assert proc.poll() is None, (tmp_path / "hub.log").read_text()[-3000:]
                    with contextlib.suppress(httpx.HTTPError):
                        got = await client.get(f"http://127.0.0.1:{port}/readyz")
                        checks = got.json()["checks"] if got.status_code == 200 else None
                    await asyncio.sleep(0.1)
            assert checks is not None, (tmp_path / "hub.log").read_text()[-3000:]
            assert checks["store"] == "ok" and checks["broker"] == "ok"
            if name == "mail":
                assert checks["mail"] == "ok"  # the SMTP settings reached a real server
            if name == "verwijsindex":
                assert checks["verwijsindex"] == "ok"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    assert proc.returncode == 0
