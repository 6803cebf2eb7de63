"""Dead-letter headers (DESIGN.md) and error text that is safe to show an operator."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from hub.logging import holds_bsn_in_groups, redact_text
from hub.spine.headers import text_headers
from schemas._base import readable
from schemas.bsn import contains_bsn, is_valid_bsn
from schemas.problems import masked_key
from schemas.pseudonym import is_youth_key, youth_key

# Header names on every dead letter, readable without decoding the payload.
DLQ_TOPIC = "dlq-original-topic"
DLQ_PARTITION = "dlq-original-partition"
DLQ_OFFSET = "dlq-original-offset"
DLQ_GROUP = "dlq-consumer-group"
DLQ_EXC_CLASS = "dlq-exception-class"
DLQ_EXC_MESSAGE = "dlq-exception-message"
DLQ_ATTEMPTS = "dlq-attempts"
DLQ_FIRST_FAILURE = "dlq-first-failure"
DLQ_LAST_FAILURE = "dlq-last-failure"
DLQ_HEADERS = (
    DLQ_TOPIC,
    DLQ_PARTITION,
    DLQ_OFFSET,
    DLQ_GROUP,
    DLQ_EXC_CLASS,
    DLQ_EXC_MESSAGE,
    DLQ_ATTEMPTS,
    DLQ_FIRST_FAILURE,
    DLQ_LAST_FAILURE,
)
# On a letter (and its replayed copy, and a letter of that) whose sender's key held BSN-shaped text
# and went as its pseudonym (`dead_letter_key`): "bsn" when the key was a BSN, so the key is that
# BSN's youth key; "text" when it only held one, so the key names no youth.
KEY_PSEUDONYM = "ketenhub-key-pseudonym"
_MAX_MESSAGE = 500
_MAX_KEY = 200  # the outbox's key column
# A database driver's message may echo the value it refused ("invalid input for query argument $4:
# {...}", "invalid input syntax for type integer: "..."", "Key (id)=(...)"): that part is cut. A
# quoted span is a value unless it follows the word for what it names ('constraint "pk"'); a value
# runs to the end of the line, since PostgreSQL does not escape the quotes inside it.
_DB_ECHO = re.compile(r"(query argument \$\d+|for type [\w ]+)\s*:.*", re.S)
_DB_KEY = re.compile(r"(Key \(.*?\))=\(.*$")
_DB_NAMES = re.compile(
    r"\b(?:relation|constraint|column|table|type|index|encoding|schema|function|sequence|database|role"
    r"|operator|extension|collation|trigger|view) $"
)
_DB_CLASS = re.compile(r"^<class '[\w.]+'>: ")


def original_headers(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    """A record's headers as text (a null one as "", bytes not UTF-8 shown as U+FFFD): what its dead
    letter carries beside the DLQ headers."""
    return text_headers(record)


def original_key(record: ConsumerRecord[Any, Any]) -> str | None:
    """A record's key as its dead letter carries it: None when it had none or one that does not fit.

    The outbox's key column holds 200 printable characters (PostgreSQL refuses a NUL): such a dead
    letter goes without the sender's key, which its position headers still point to.
    """
    if record.key is None:
        return None
    key = bytes(record.key).decode("utf-8", "backslashreplace")
    return key if len(key) <= _MAX_KEY and key.isprintable() else None


def dead_letter_key(record: ConsumerRecord[Any, Any], secret: str | None) -> tuple[str | None, str | None]:
    """The key a record's dead letter (and its replayed copy) goes with, and its `KEY_PSEUDONYM` mark:
    the sender's key (`original_key`), or its pseudonym when a BSN is in it (`key_without_bsn`)."""
    return key_without_bsn(original_key(record), secret)


def key_without_bsn(key: str | None, secret: str | None) -> tuple[str | None, str | None]:
    """A sender's key as the hub may write it to Kafka, and its `KEY_PSEUDONYM` mark (None: as it was).

    The hub's keys are youth keys, and no BSN is to be in a Kafka key. A key that is a BSN (eight
    digits or nine), or holds nine digits that pass the elfproef, is replaced by its pseudonym under
    the hub's `secret` (for a key that is a BSN, the youth's own key, so the letter is found and
    audited by the youth); without a secret it is dropped (a dead letter's position headers still
    point to the record). A youth key is one already, whatever digits are in it."""
    if key is None or is_youth_key(key):
        return key, None
    is_bsn = is_valid_bsn(key)
    # in groups too ("1234 56 782", "2025-01-01 1234-56-782"), as the log's redaction finds one
    if not (is_bsn or contains_bsn(key) or holds_bsn_in_groups(key)):
        return key, None
    if not secret:
        return None, None
    return youth_key(secret, key), "bsn" if is_bsn else "text"


def safe_error_message(exc: BaseException) -> str:
    """What went wrong, without echoing input values (a BSN or a name may be in them)."""
    if isinstance(exc, ValidationError):
        # a field's path names the sender's keys too (an unknown one): one not key-shaped is masked
        masks: dict[str, str] = {}
        parts = [f"{_path(e['loc'], masks) or '(body)'}: {e['msg']}" for e in exc.errors()[:10]]
        text = f"{exc.error_count()} validation error(s): " + "; ".join(parts)
    elif isinstance(exc, DBAPIError):  # not str(exc): the driver's text, without the values it echoes
        orig = exc.orig
        said = _DB_CLASS.sub("", (str(orig) or type(orig).__name__).splitlines()[0])
        said = _DB_KEY.sub(r"\1=(value not shown)", _DB_ECHO.sub(r"\1: value not shown", said))
        said = _quoted_values_cut(said)
        code = getattr(orig, "sqlstate", None)
        text = f"database error{f' {code}' if code else ''} ({type(orig).__name__}): {said}"
    else:
        text = str(exc) or type(exc).__name__
    # A partner's answer may carry a NUL or undecodable bytes (a Latin-1 SMTP reply): the text is
    # stored (parked rows, DLQ headers), so it is made storable here, or its recording fails forever.
    text = readable(text.encode("utf-8", "replace").decode("utf-8"))
    # Cut before redacting as well (a partner's answer may be megabytes): redaction shortens a text by
    # less than a fifth, so nothing past this bound could reach the kept part.
    return redact_text(text[: 4 * _MAX_MESSAGE])[:_MAX_MESSAGE]


def _path(loc: tuple[int | str, ...], masks: dict[str, str]) -> str:
    return ".".join(str(part) if isinstance(part, int) else masked_key(str(part), masks) for part in loc)


def _quoted_values_cut(text: str) -> str:
    """`text` with every quoted value, and what follows it on the line, shown as "(value not shown)";
    a quoted name of a relation, constraint, column and the like stays."""
    kept, at = [], 0
    while (start := text.find('"', at)) != -1:
        end = text.find('"', start + 1)
        if end != -1 and _DB_NAMES.search(text, 0, start):
            kept.append(text[at : end + 1])
            at = end + 1
            continue
        kept.append(text[at:start] + '"(value not shown)"')
        return "".join(kept)
    return "".join(kept) + text[at:]


def dlq_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    group: str,
    exc: BaseException,
    attempts: int,
    first_failure: datetime,
    last_failure: datetime,
) -> dict[str, str]:
    """The DLQ headers of DESIGN.md for one failed record."""
    return {
        DLQ_TOPIC: topic,
        DLQ_PARTITION: str(partition),
        DLQ_OFFSET: str(offset),
        DLQ_GROUP: group,
        DLQ_EXC_CLASS: f"{type(exc).__module__}.{type(exc).__qualname__}",
        DLQ_EXC_MESSAGE: safe_error_message(exc),
        DLQ_ATTEMPTS: str(attempts),
        DLQ_FIRST_FAILURE: first_failure.isoformat(),
        DLQ_LAST_FAILURE: last_failure.isoformat(),
    }
