"""The envelope every Kafka record carries, and the header names it travels under."""

from __future__ import annotations

import os
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from schemas._base import NO_CONTROL

# Kafka header names (rule 19 names the transaction id header).
H_MESSAGE_ID = "message-id"
H_MESSAGE_TYPE = "message-type"
H_TRANSACTION_ID = "transaction-id"
H_CORRELATION_ID = "correlation-id"
H_SOURCE = "source"


# Message and transaction ids become Kafka headers, inbox and parked keys and audit fields: the same
# rule as the spine's for id headers (1-100 printable characters, `hub.spine.consumer`), so that an
# id a body carries is one its header may carry. Type and source: no control character. A
# correlation id is a reference (a case reference, a signal id): any `Code` is one.
ID_MAX = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_id(value: object) -> bool:
    """True for a usable message or transaction id, in a body or a header: 1-100 printable characters."""
    return isinstance(value, str) and 0 < len(value) <= ID_MAX and value.isprintable()


def is_trace_id(value: object) -> bool:
    """True for a transaction id the hub passes on as it is: printable ASCII without spaces, 1-100
    characters. It travels in HTTP headers (a webhook's `Fsc-Transaction-Id`), which take ASCII only,
    and is kept in the audit log for years: a name ("zaak J. de Vries") is no id."""
    return is_id(value) and str(value).isascii() and " " not in str(value)


def trace_id(value: str) -> str:
    """`value` when it is a trace id, else a UUID made from it: the same id in, the same id out, so
    what one transaction caused stays linked, and the text itself (perhaps a name) goes no further."""
    return (
        value if is_trace_id(value) else str(uuid.uuid5(uuid.NAMESPACE_URL, f"ketenhub:transaction:{value}"))
    )


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text: no control or format characters, no space but ' '")
    return value


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must hold no control character (such as NUL, a tab or a line break)")
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX), AfterValidator(_printable)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_control)]
Reference = Annotated[str, StringConstraints(max_length=200, pattern=NO_CONTROL)]

_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant bits


class _Randomness(threading.local):
    """Random bytes from the operating system, fetched 256 ids at a time (per thread)."""

    buf = b""
    pos = 0


_random = _Randomness()


def _forget_randomness() -> None:
    _random.__dict__.clear()  # a forked child must never hand out its parent's next ids


os.register_at_fork(after_in_child=_forget_randomness)


def new_id() -> str:
    """A fresh random UUID (version 4) as text: message, transaction and record ids.

    The same randomness as `uuid.uuid4()` (os.urandom), but one system call per 256 ids and no
    UUID object: uuid4 was a tenth of the intake's time.
    """
    r = _random
    if r.pos >= len(r.buf):
        r.buf, r.pos = os.urandom(4096), 0
    h = r.buf[r.pos : r.pos + 16].hex()
    r.pos += 16
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One message on a topic: identity, tracing and the payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: Id = Field(default_factory=new_id, description="UUID; the inbox dedup key")
    type: Word = Field(description="message type, e.g. 'Referral'")
    version: int = Field(default=1, ge=1)
    transaction_id: Id = Field(default_factory=new_id)
    correlation_id: Reference | None = None
    source: Word = "ketenhub"
    occurred_at: datetime = Field(default_factory=utcnow)
    payload: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def new(
        cls,
        type_: str,
        payload: dict[str, Any],
        *,
        transaction_id: str,
        correlation_id: str | None = None,
        source: str = "ketenhub",
        version: int = 1,
    ) -> Envelope:
        """A message the hub makes itself from values its own code holds: a fresh id, now, and no
        second validation of what mypy already checked (the hot paths make several per record)."""
        return cls.model_construct(
            message_id=new_id(),
            type=type_,
            version=version,
            transaction_id=transaction_id,
            correlation_id=correlation_id,
            source=source,
            occurred_at=utcnow(),
            payload=payload,
        )

    def header_map(self) -> dict[str, str]:
        """Ids and type as Kafka headers, so operators can read a record without decoding it."""
        headers = {
            H_MESSAGE_ID: self.message_id,
            H_MESSAGE_TYPE: f"{self.type}.v{self.version}",
            H_TRANSACTION_ID: self.transaction_id,
            H_SOURCE: self.source,
        }
        if self.correlation_id:
            headers[H_CORRELATION_ID] = self.correlation_id
        return headers

    def headers(self) -> list[tuple[str, bytes]]:
        """`header_map` as Kafka record headers."""
        return [(k, v.encode()) for k, v in self.header_map().items()]

    def to_bytes(self) -> bytes:
        """The record value."""
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse a record value; raises pydantic.ValidationError when it is not an envelope."""
        return cls.model_validate_json(raw)

    def reply(self, type_: str, payload: dict[str, Any], *, version: int = 1) -> Envelope:
        """A new message caused by this one: same transaction and correlation."""
        return Envelope(
            type=type_,
            version=version,
            transaction_id=self.transaction_id,
            correlation_id=self.correlation_id,
            payload=payload,
        )
