"""What a request that meets a dependency's failure is answered with: 503 and Retry-After (the sender
tries again), never a bare 500, which a partner takes for a bug in the hub."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa_exc

from hub.api.problems import RETRY_AFTER_S, install_problem_handlers

FAILURES: dict[str, Exception] = {
    # no free connection in the store's pool in time: SQLAlchemy's own, not a DBAPIError
    "pool": sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"),
    # the store's name did not resolve (DNS restarting)
    "dns": socket.gaierror(-3, "Temporary failure in name resolution"),
    # a connect to every address of a name failed (asyncio's "Multiple exceptions")
    "every-address": OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432), [Errno 99] Cannot"
        " assign requested address"
    ),
    # the same from uvloop, which `ketenhub run` serves on
    "every-address-uvloop": OSError(
        "Multiple exceptions: [Errno 111] Connection refused, [Errno 99] Cannot assign requested address"
    ),
    "no-route": OSError(113, "No route to host"),
    "refused": ConnectionRefusedError(111, "Connection refused"),
    "timed-out": TimeoutError(),
}


def _raising(failure: Exception) -> Callable[[], Awaitable[None]]:
    async def fail() -> None:
        raise failure

    return fail


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    for name, failure in FAILURES.items():
        app.get(f"/{name}")(_raising(failure))

    app.get("/bug")(_raising(ValueError("a mistake of the hub's own")))
    app.get("/missing-file")(_raising(FileNotFoundError(2, "No such file", "hub/static/login.html")))
    return app


@pytest.mark.parametrize("name", sorted(FAILURES))
async def test_a_dependency_that_fails_is_a_503_with_retry_after(app: FastAPI, name: str) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        r = await client.get(f"/{name}")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == str(RETRY_AFTER_S)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "Connection refused" not in r.text and "QueuePool" not in r.text  # no internals


@pytest.mark.parametrize("path", ["/bug", "/missing-file"])
async def test_the_hubs_own_mistake_stays_a_500(app: FastAPI, path: str) -> None:
    """Not a 503 that tells the sender to come back: a file the hub lacks is missing for good."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        r = await client.get(path)
    assert r.status_code == 500 and "retry-after" not in r.headers
