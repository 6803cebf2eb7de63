"""Request bodies are capped before anything reads them: an anonymous sender cannot fill the memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from hub.api.limits import DRAIN_AT_MOST, BodyTooLarge, LimitBodyMiddleware
from hub.embedded import EmbeddedKafka
from tests.conftest import make_settings
from tests.helpers.http import serving
from tests.integration.test_intake_http import Api, intake_api, sample

pytestmark = pytest.mark.integration
# The unauthenticated login and an endpoint whose body is a pydantic model (parsed before auth).
ANONYMOUS_POSTS = ["/ops/login", "/api/v1/overdrachten"]
CHUNK = 1000


@pytest.fixture
async def api(kafka: EmbeddedKafka, tmp_path: Path, unique: str) -> AsyncIterator[Api]:
    async with intake_api(
        make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", unique)
    ) as running:
        yield running


class Counted:
    """A streamed body of `size` bytes that counts the chunks the server pulled from it."""

    def __init__(self, size: int, prefix: bytes = b"") -> None:
        self.size, self.prefix, self.pulled = size, prefix, 0

    @property
    def chunks(self) -> int:
        return -(-self.size // CHUNK)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.size:
            chunk = (self.prefix if sent == 0 else b"") or b"a" * min(CHUNK, self.size - sent)
            self.pulled += 1
            sent += len(chunk)
            yield chunk


def assert_too_large(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Bericht te groot" and str(limit) in body["detail"]
    assert body["invalidParams"][0]["name"] == "(bericht)"


def json_of_size(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (it passes the parser, so the next check decides)."""
    shell = b'{"username": "x", "password": ""}'
    return shell[:-2] + b"a" * (size - len(shell)) + shell[-2:]


@pytest.mark.parametrize("path", ANONYMOUS_POSTS)
async def test_a_declared_oversize_body_is_refused_without_reading_it(api: Api, path: str) -> None:
    limit = api.hub.settings.http.max_body_bytes
    body = Counted(limit * 50)
    response = await api.client.post(
        path,
        content=body,
        headers={"Content-Type": "application/json", "Content-Length": str(body.size)},
    )
    assert_too_large(response, limit)
    assert body.pulled == 0


@pytest.mark.parametrize("path", ANONYMOUS_POSTS)
async def test_a_streamed_oversize_body_is_refused_as_soon_as_it_passes_the_limit(
    api: Api, path: str
) -> None:
    limit = api.hub.settings.http.max_body_bytes
    body = Counted(limit * 50, prefix=b'{"username": "x", "password": "')
    response = await api.client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert_too_large(response, limit)
    assert "content-length" not in response.request.headers
    # it kept nothing past the limit, and read on no further than the drain's bound (what it drops so
    # that a sender still sending reads the 413)
    assert body.pulled <= (limit + DRAIN_AT_MOST) // CHUNK + 2 < body.chunks


@pytest.mark.parametrize("path", ANONYMOUS_POSTS)
@pytest.mark.parametrize("streamed", [False, True])
async def test_a_body_at_the_limit_still_reaches_the_endpoint(api: Api, path: str, streamed: bool) -> None:
    limit = api.hub.settings.http.max_body_bytes
    raw = json_of_size(limit)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), CHUNK):
            yield raw[start : start + CHUNK]

    response = await api.client.post(
        path, content=chunks() if streamed else raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401, response.text  # anonymous, as before the cap


async def test_partner_batches_at_the_limit_are_taken(api: Api) -> None:
    limit = api.hub.settings.http.max_body_bytes
    csv = sample("leerplicht", "valid_batch_utf8.csv")
    at_limit = csv + b"\n" * (limit - len(csv))  # blank lines are no rows
    response = await api.post("leerplicht", at_limit)
    assert response.status_code == 200, response.text
    assert_too_large(await api.post("leerplicht", at_limit + b"\n"), limit)


async def test_the_login_form_and_console_files_still_work(api: Api) -> None:
    form = await api.client.post("/ops/login", data={"username": "nobody", "password": "wrong"})
    assert form.status_code == 303 and form.headers["location"] == "/ops/login?failed=1"
    page = await api.client.get("/ops/login")
    assert page.status_code == 200 and "<form" in page.text
    script = await api.client.get("/ops/static/dashboard.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    login = await api.client.post("/ops/login", json={"username": "nobody", "password": "wrong"})
    assert login.status_code == 401


async def test_a_response_under_way_is_cut_off_not_followed_by_a_second() -> None:
    async def streams_then_reads(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass

    async def client_sends() -> Message:
        return {"type": "http.request", "body": b"a" * CHUNK, "more_body": True}

    sent: list[Message] = []

    async def server_gets(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "path": "/ops/stream", "headers": []}
    with pytest.raises(BodyTooLarge):
        await LimitBodyMiddleware(streams_then_reads, limit=10 * CHUNK)(scope, client_sends, server_gets)
    assert [m["type"] for m in sent] == ["http.response.start"]  # the server closes the connection


async def _reads_its_body(scope: Scope, receive: Receive, send: Send) -> None:
    """An endpoint that reads its whole body, then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("times", [12, 16.5], ids=["under-1-MiB", "over-1-MiB"])
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_sender_that_sends_an_oversize_body_whole_reads_the_413(streamed: bool, times: float) -> None:
    """Refused on its headers, or once the limit passed, the connection closed with the rest of the
    body unread: a sender still sending (most HTTP clients send the body whole before reading) got
    a reset connection, not the 413 that says what to do. Up to `DRAIN_AT_MOST` more is read and
    dropped first. On a real server and socket: the reset is the kernel's."""
    limit = 64 * 1024
    body = b"a" * int(limit * times)  # well past the socket buffers, within the drain's bound
    assert len(body) <= limit + DRAIN_AT_MOST
    if streamed:
        sent = (
            b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in _parts(body, 16 * 1024)) + b"0\r\n\r\n"
        )
        framing = b"Transfer-Encoding: chunked"
    else:
        sent, framing = body, b"Content-Length: %d" % len(body)
    async with serving(LimitBodyMiddleware(_reads_its_body, limit)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST /api/v1/politie/verwijzingen HTTP/1.1\r\nHost: hub\r\n" + framing + b"\r\n\r\n"
            )
            writer.write(sent)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"Bericht te groot" in answer


def _parts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_sender_that_waits_for_100_continue_is_refused_without_being_asked_for_its_body() -> None:
    """Asked for its body (a server's first read answers 100 Continue), a sender that waits to be
    asked sends a body that is then refused; refused on its headers, it sends none."""
    limit = 64 * 1024
    async with serving(LimitBodyMiddleware(_reads_its_body, limit)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST /api/v1/politie/verwijzingen HTTP/1.1\r\nHost: hub\r\n"
                b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (limit * 2)
            )
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 30)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
