"""Signed webhook calls: `X-Ketenhub-Signature: sha256=<hex HMAC of the raw body>`, `Fsc-Transaction-Id`."""

from __future__ import annotations

import hashlib
import hmac

import httpx

from hub.errors import PermanentError, TransientError
from hub.retry.policy import parse_retry_after
from schemas.envelope import Envelope, trace_id

SIGNATURE_HEADER = "X-Ketenhub-Signature"
TRANSACTION_HEADER = "Fsc-Transaction-Id"


def sign(secret: str, body: bytes) -> str:
    """The signature header value a receiver recomputes over the raw body with its secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: constant-time compare of the header with its own signature."""
    # as bytes: compare_digest refuses text with non-ASCII characters (a TypeError, not a mismatch)
    return header is not None and hmac.compare_digest(sign(secret, body).encode(), header.encode())


async def post_signed(client: httpx.AsyncClient, url: str, secret: str, message: Envelope) -> None:
    """POST the envelope; 2xx is done, 408/429/5xx and network trouble are transient, other 4xx permanent."""
    body = message.to_bytes()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        TRANSACTION_HEADER: trace_id(message.transaction_id),  # ASCII, as a header must be
        "X-Ketenhub-Message-Id": message.message_id,
        "X-Ketenhub-Message-Type": f"{message.type}.v{message.version}",
    }
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise TransientError("receiver webhook timed out") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"receiver webhook unreachable ({type(exc).__name__})") from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        wait = parse_retry_after(response.headers.get("retry-after"))
        raise TransientError(f"receiver webhook answered {status}", retry_after=wait)
    raise PermanentError(f"receiver webhook refused the handover ({status})")
