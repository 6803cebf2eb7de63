"""A receiver's webhook over real HTTP: the signature it can check, and how its answers map to errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from connectors.receivers.webhook import SIGNATURE_HEADER, post_signed, sign, verify
from hub.errors import PermanentError, TransientError
from schemas.envelope import Envelope
from tests.helpers.http import serving

SECRET = "receiver-webhook-secret-0123456789abcdef"


def receiver(status: int, headers: dict[str, str] | None = None) -> tuple[FastAPI, list[bool]]:
    """A receiver answering every POST with `status`; records whether each signature checked out."""
    app, checked = FastAPI(), []

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        checked.append(verify(SECRET, await request.body(), request.headers.get(SIGNATURE_HEADER)))
        return Response(status_code=status, headers=headers)

    return app, checked


async def _post(app: FastAPI) -> None:
    message = Envelope(type="handover.dispatch", payload={"n": 1})
    async with serving(app) as port, httpx.AsyncClient(timeout=5) as client:
        await post_signed(client, f"http://127.0.0.1:{port}/hook", SECRET, message)


async def test_a_signed_post_is_accepted() -> None:
    app, checked = receiver(204)
    await _post(app)
    assert checked == [True]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_in_either_form_is_passed_to_the_ladder(form: str) -> None:
    wait = 90
    until = datetime.now(UTC) + timedelta(seconds=wait)
    value = str(wait) if form == "seconds" else format_datetime(until, usegmt=True)
    app, checked = receiver(429, {"Retry-After": value})
    with pytest.raises(TransientError, match="answered 429") as caught:
        await _post(app)
    answered = datetime.now(UTC)
    assert checked == [True]
    # a date is the wait from when the answer came (a busy machine's start of the server is no part
    # of it), less the second the header's form drops
    least = wait if form == "seconds" else (until - answered).total_seconds() - 1
    assert caught.value.retry_after is not None and least <= caught.value.retry_after <= wait


@pytest.mark.parametrize(
    ("status", "kind"), [(503, TransientError), (408, TransientError), (400, PermanentError)]
)
async def test_answers_map_to_error_kinds(status: int, kind: type[Exception]) -> None:
    app, _ = receiver(status)
    with pytest.raises(kind):
        await _post(app)


def test_a_signature_header_with_non_ascii_characters_is_a_mismatch_not_an_error() -> None:
    """A receiver comparing the header as text raised TypeError for a non-ASCII character."""
    body = b'{"a": 1}'
    assert verify(SECRET, body, sign(SECRET, body))
    for header in ("sha256=\xe9", "sha256=" + "é" * 64, ""):
        assert verify(SECRET, body, header) is False
