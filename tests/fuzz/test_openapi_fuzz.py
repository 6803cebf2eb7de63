"""schemathesis against the hub's own OpenAPI, over real HTTP to a `ketenhub run` process.

Every operation is called with generated requests, once without credentials and once with valid
ones (the partner key of the endpoint's kind, an active caseworker, an operator session that may do
everything). Checks: no 5xx, and every answer (status, content type, body) as the document says.
Bounded by KETENHUB_FUZZ_EXAMPLES (default 10 per operation).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from hub.directory.service import upsert_caseworker
from hub.embedded import free_port
from hub.ops.auth import add_operator
from hub.partners import PartnerType, add_partner
from hub.store import Store
from schemas.caseworker import Caseworker
from tests.helpers.procs import KETENHUB

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
EXAMPLES = int(os.environ.get("KETENHUB_FUZZ_EXAMPLES", "10"))
CASEWORKER = "cw-fuzz"
OPERATOR = ("fuzz-officer", "fuzz-password-that-is-long")
# A fuzzer that logs itself out, or bulk-replays and discards, tests nothing more but undoes the session.
SKIP = {("POST", "/ops/logout")}


async def _seed(db_url: str) -> dict[str, str]:
    store = Store(db_url)
    await store.migrate()
    keys = {}
    async with store.transaction() as session:
        for kind in PartnerType:
            _, keys[kind.value] = await add_partner(session, f"{kind.value}-fuzz", kind)
        await upsert_caseworker(
            session,
            Caseworker(
                caseworker_id=CASEWORKER, name="Fuzz Tester", email="fuzz@halt.nl", team="DEN_HAAG",
                meldingsbevoegd=True,
            ),
        )  # fmt: skip
    await add_operator(store, *OPERATOR, "privacy_officer")
    await store.close()
    return keys


class Running:
    """The hub process and the credentials made for it."""

    def __init__(self, url: str, keys: dict[str, str], cookie: dict[str, str]) -> None:
        self.url, self.keys, self.cookie = url, keys, cookie

    def headers_for(self, path: str) -> dict[str, str]:
        kind = path.split("/")[3] if path.startswith("/api/v1/") else ""
        if kind in ("signalen", "toestemmingen", "overdrachten", "zorgmeldingen"):
            kind = "zaaksysteem"  # the caseworker API: the case system's key and the caseworker it names
        key = self.keys.get(kind, self.keys["politie"])
        return {"Authorization": f"Bearer {key}", "X-Medewerker": CASEWORKER}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("fuzz")
    keys = asyncio.run(_seed(f"sqlite+aiosqlite:///{workdir / 'ketenhub.db'}"))
    port = free_port()
    log = (workdir / "hub.log").open("wb")
    proc = subprocess.Popen(
        [KETENHUB, "run", "--port", str(port)], cwd=workdir, stdout=log, stderr=log,
        env={**os.environ, "KETENHUB_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (workdir / "hub.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        login = httpx.post(url + "/ops/login", json={"username": OPERATOR[0], "password": OPERATOR[1]})
        assert login.status_code == 200, login.text
        yield Running(url, keys, dict(login.cookies))
        assert proc.poll() is None, "the hub died under the fuzzer"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# Partner formats are parsed leniently at the edge and a document cannot say everything the parser
# checks (a date that exists on the calendar, an elfproef BSN): such a schema-valid request gets a
# documented 400 with the field named, which is right, so "schema-valid data must be accepted" is
# not asked. Every other check is: no 5xx, status codes, content types and bodies as documented.
EXCLUDED = [positive_data_acceptance]


def _fuzz(running: Running, *, credentials: bool) -> list[str]:
    """Every operation with generated cases; returns what failed, per operation."""
    schema = schemathesis.openapi.from_url(running.url + "/openapi.json")
    failed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue

        @given(case=operation.as_strategy())
        @_settings
        def run(case: Any) -> None:
            if credentials:
                case.call_and_validate(
                    base_url=running.url,
                    headers=running.headers_for(case.path),
                    cookies=running.cookie,
                    allow_redirects=False,
                    excluded_checks=EXCLUDED,
                )
            else:
                case.call_and_validate(
                    base_url=running.url,
                    headers={"Authorization": "", "X-Medewerker": ""},
                    allow_redirects=False,
                    excluded_checks=EXCLUDED,
                )

        try:
            run()
        except Exception as exc:
            failed.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:600]}")
    return failed


def test_without_credentials_no_5xx_and_answers_as_documented(running: Running) -> None:
    failed = _fuzz(running, credentials=False)
    assert not failed, "\n\n".join(failed)


def test_with_credentials_no_5xx_and_answers_as_documented(running: Running) -> None:
    failed = _fuzz(running, credentials=True)
    assert not failed, "\n\n".join(failed)


def test_the_document_covers_every_partner_caseworker_and_operator_endpoint(running: Running) -> None:
    paths = httpx.get(running.url + "/openapi.json").json()["paths"]
    for needed in ("/api/v1/politie/verwijzingen", "/api/v1/signalen", "/api/v1/toestemmingen",
                   "/api/v1/overdrachten", "/api/v1/medewerkers", "/ops/api/dlq"):  # fmt: skip
        assert needed in paths
