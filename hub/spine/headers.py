"""A record's headers as the spine reads them: any bytes, or none at all, are text, never an error.

A header's value is whatever the sender put there: bytes in any encoding (a partner's Latin-1), or
null (Kafka allows it). Read strictly, one such header failed the record before it could be
dead-lettered, and FastStream's own batch parser failed the whole batch before the spine saw it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiokafka import ConsumerRecord
from faststream.message import StreamMessage

from hub.errors import PermanentError
from schemas.envelope import H_MESSAGE_ID, H_TRANSACTION_ID, ID_MAX, Envelope, is_id, trace_id

MAX_ID = ID_MAX  # message and transaction ids from headers, as in a body: the audit log's column

Records = tuple[ConsumerRecord[Any, Any], ...]


def header_text(value: bytes | None) -> str:
    """A header's value as text: undecodable bytes shown as U+FFFD, a null value as ""."""
    return "" if value is None else bytes(value).decode("utf-8", "replace")


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    """A record header as text (`header_text`), or None when the record has no such header."""
    for key, value in record.headers or ():
        if key == name:
            return header_text(value)
    return None


def text_headers(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    """Every header of a record as text (`header_text`)."""
    return {key: header_text(value) for key, value in record.headers or ()}


async def parse_batch(
    records: Records, default: Callable[[Records], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """FastStream's parser for the spine's batch subscribers.

    FastStream's own (`default`) decodes every header of the batch as strict UTF-8 and raised on a
    Latin-1 or null value before the spine saw the batch: nothing rewound it, and the next batch's
    ack committed past every record fetched with it. A batch it refuses is parsed again from copies
    whose headers are text (`header_text`); the message keeps the records as they came, which is
    what the spine reads (and dead-letters). The copies cost nothing while every header is UTF-8.
    """
    try:
        return await default(records)
    except Exception:  # a header FastStream cannot read as text: nothing else in it reads a record
        readable = tuple(
            replace(r, headers=tuple((k, header_text(v).encode()) for k, v in r.headers or ()))
            for r in records
        )
        message = await default(readable)
        message.raw_message = records
        return message


def is_usable_id(value: str | None) -> bool:
    """Whether an id header's value (as `header` reads it) can be a message or transaction id: 1 to
    MAX_ID printable characters, none of them a U+FFFD, which stands for bytes that were not UTF-8
    (two ids that differ only there would be one)."""
    return value is not None and is_id(value) and "\ufffd" not in value


class BadHeader(PermanentError):
    """A record's id header is there but cannot be used (dedup and rule 19 depend on it)."""


def _id_header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    """An id header's value; None when absent; BadHeader when empty (or null), too long, not UTF-8
    or not printable. Bytes not UTF-8 are refused, not read as U+FFFD: two ids that differ only there
    would be one message id, and the second message a duplicate of the first."""
    value = header(record, name)
    if value is None:
        return None
    if not is_usable_id(value):
        raise BadHeader(
            f"header {name!r} is empty, longer than {MAX_ID} characters or not printable UTF-8 text; "
            f"send an id of 1 to {MAX_ID} printable characters (a UUID), or leave the header out"
        )
    return value


def message_id_of(record: ConsumerRecord[Any, Any]) -> str:
    """The dedup id of a record: its message-id header, or its position when it has none (or an
    unusable one, which `check_id_headers` dead-letters)."""
    try:
        return _id_header(record, H_MESSAGE_ID) or f"{record.topic}:{record.partition}:{record.offset}"
    except BadHeader:
        return f"{record.topic}:{record.partition}:{record.offset}"


def transaction_id_of(record: ConsumerRecord[Any, Any], message_id: str, decoded: Any = None) -> str:
    """Rule 19: the record's transaction-id header, else the one in its envelope (`decoded`), else its
    message id (also for an unusable header, which `check_id_headers` dead-letters). One that is not
    printable ASCII without spaces (a name, say) is replaced by a UUID made from it (`trace_id`)."""
    try:
        found = _id_header(record, H_TRANSACTION_ID)
    except BadHeader:
        return trace_id(message_id)
    if found is None and isinstance(decoded, Envelope) and is_id(decoded.transaction_id):
        found = decoded.transaction_id
    return trace_id(found or message_id)


def check_id_headers(record: ConsumerRecord[Any, Any]) -> None:
    """Raise BadHeader when the message-id or transaction-id header is present but unusable."""
    _id_header(record, H_MESSAGE_ID)
    _id_header(record, H_TRANSACTION_ID)
