"""Dead letters as read from the DLQ topics: one letter, which ones an operator asks for, and reading
them (headers and keys for a list; the payloads only of the letters asked for by position).

A letter's key is its sender's, unless a BSN was in it: then its pseudonym
(`hub.spine.dlq.key_without_bsn`, marked `KEY_PSEUDONYM`; letters written before that keep what the
sender used, even a BSN). It is shown, and matched by a key filter, only when it is shaped as the
hub's own youth key (a pseudonym is: it names no one), unless the operator may see personal data
unmasked.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from hub.clock import LOCAL
from hub.ops.lag import BrokersUnavailable
from hub.ops.masking import is_youth_key, show_headers, show_key
from hub.spine.dlq import (
    DLQ_EXC_CLASS,
    DLQ_EXC_MESSAGE,
    DLQ_GROUP,
    DLQ_LAST_FAILURE,
    DLQ_TOPIC,
    KEY_PSEUDONYM,
    key_without_bsn,
    safe_error_message,
)
from hub.spine.headers import is_usable_id, text_headers
from schemas.bsn import is_valid_bsn, normalise_bsn
from schemas.envelope import H_MESSAGE_ID, H_TRANSACTION_ID

READ_S = 15.0  # for the brokers to answer a start or a metadata request
IDLE_S = 15.0  # for the next letters to arrive: a read that makes progress goes on, however long


# The topics whose records are keyed by a receiver's `youth_ref` (connectors.receivers.outgoing), not
# by the hub's youth key: the receivers' answers.
_KEYED_BY_REF = re.compile(r"handover\.answers\.[a-z]+\.v[0-9]+$")  # after any topic prefix


@dataclass
class DeadLetter:
    """One record on a DLQ topic, with what was done with it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    headers: dict[str, str]
    # None when only listed: a list of letters holds no payloads, which can be megabytes each.
    payload: bytes | None = field(default=None, repr=False)
    status: str = "open"
    # the id of the first letter of the same failed record, when this one is a copy of it (the relay
    # publishes at least once); set by a list (`DeadLetters.find`), None otherwise
    copy_of: str | None = None

    @property
    def youth_key(self) -> str | None:
        """The youth the letter is about, for the audit log: its key when that is the hub's own youth
        key (a sender's own key, even a BSN, is not written into the audit log; nor is the pseudonym
        of one, `KEY_PSEUDONYM`, which names a youth only as a last resort: `key_youth`; nor a
        receiver's `youth_ref`, the key of its answers, which has a youth key's shape)."""
        if KEY_PSEUDONYM in self.headers or _KEYED_BY_REF.search(self.headers.get(DLQ_TOPIC, "")):
            return None
        return self.key if is_youth_key(self.key) else None

    @property
    def key_youth(self) -> str | None:
        """The youth key the letter's key is as the pseudonym of the BSN its sender keyed it by."""
        return self.key if self.headers.get(KEY_PSEUDONYM) == "bsn" else None

    @property
    def value(self) -> bytes:
        """The payload, as read by `DeadLetters.get`; a listed letter has none loaded (LookupError)."""
        if self.payload is None:
            raise LookupError(f"the payload of dead letter {self.id} was not read")
        return self.payload

    @property
    def position(self) -> tuple[str, int, int]:
        """Topic, partition and offset."""
        return self.topic, self.partition, self.offset

    @property
    def id(self) -> str:
        """`<dlq topic>:<partition>:<offset>`: stable, and names no person."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def failed_at(self) -> datetime:
        """When it last failed (header), else when it was written."""
        with contextlib.suppress(KeyError, ValueError):
            return datetime.fromisoformat(self.headers[DLQ_LAST_FAILURE])
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def usable_id(self, name: str) -> str | None:
        """An id header as the spine would use it: None when absent or unusable (empty, too long, not
        printable, or holding bytes that were not UTF-8), as for a record the spine dead-lettered for
        that very header."""
        value = self.headers.get(name)
        return value if is_usable_id(value) else None

    def summary(self, *, unmasked: bool = False) -> dict[str, Any]:
        """What a list shows: ids, error and status; no payload. The key only when it is a youth key
        or `unmasked` (an operator allowed to see personal data, audited by the caller); the values
        taken from headers as the detail's headers show them (a sender's message id may be a name)."""
        names = (DLQ_TOPIC, DLQ_GROUP, DLQ_EXC_CLASS, DLQ_EXC_MESSAGE, H_MESSAGE_ID, H_TRANSACTION_ID)
        shown = show_headers({n: self.headers[n] for n in names if n in self.headers}, unmasked=unmasked)
        return {
            "id": self.id,
            "dlq_topic": self.topic,
            "original_topic": shown.get(DLQ_TOPIC),
            "group": shown.get(DLQ_GROUP),
            "error_class": shown.get(DLQ_EXC_CLASS),
            "error": shown.get(DLQ_EXC_MESSAGE),
            "failed_at": self.failed_at.isoformat(),
            "key": show_key(self.key, unmasked=unmasked),
            "message_id": shown.get(H_MESSAGE_ID),
            "transaction_id": shown.get(H_TRANSACTION_ID),
            "status": self.status,
            "copy_of": self.copy_of,
        }


@dataclass(frozen=True)
class Filter:
    """Which dead letters: by DLQ or original topic, error class (substring), time range, key, status.

    A key matches a youth key only, unless `raw_keys`: any other key is personal data (a BSN even),
    to be searched for only by an operator who may see it unmasked. A key with a BSN in it matches its
    pseudonym too, once known (`with_pseudonym`): the spine files the letter of a record so keyed
    under that, not under the key as sent.
    """

    topic: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    key: str | None = None
    status: str | None = "open"
    raw_keys: bool = False
    key_pseudonym: str | None = None

    def __post_init__(self) -> None:
        # A time without an offset is the operator's own: Dutch local time (as hub.clock reads one).
        # Left naive, comparing it with a letter's time raised TypeError.
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                object.__setattr__(self, name, moment.replace(tzinfo=LOCAL))

    def with_pseudonym(self, secret: str | None) -> Filter:
        """This filter, its key matching also the key the spine files a letter under when its record
        was keyed by this one (`key_without_bsn` under the hub's `secret`): a search by a BSN finds the
        letters filed under its youth key, and still those written before, under the BSN itself."""
        if self.key is None or not secret:
            return self
        pseudonym, mark = key_without_bsn(self.key, secret)
        return self if mark is None else replace(self, key_pseudonym=pseudonym)

    def _key_matches(self, key: str | None) -> bool:
        if key is None or key not in (self.key, self.key_pseudonym):
            return False
        return self.raw_keys or is_youth_key(key)

    def matches(self, d: DeadLetter) -> bool:
        """True when `d` passes every given criterion."""
        return (
            (self.topic is None or self.topic in (d.topic, d.headers.get(DLQ_TOPIC)))
            and (self.error_class is None or self.error_class in d.headers.get(DLQ_EXC_CLASS, ""))
            and (self.since is None or d.failed_at >= self.since)
            and (self.until is None or d.failed_at <= self.until)
            and (self.key is None or self._key_matches(d.key))
            and (self.status is None or d.status == self.status)
        )


_LETTER_ID = re.compile(r"(.+):([0-9]{1,10}):([0-9]{1,19})")
PARTITION_END, OFFSET_END = 2**31, 2**63  # Kafka's partitions are int32, its offsets int64


def parse_id(letter_id: str) -> tuple[str, int, int]:
    """Split `<topic>:<partition>:<offset>`; ValueError when malformed or past what Kafka can hold
    (an offset of 2**70 was sought for 15 s)."""
    found = _LETTER_ID.fullmatch(letter_id)
    if found is None or int(found[2]) >= PARTITION_END or int(found[3]) >= OFFSET_END:
        raise ValueError("a dead-letter id is <dlq topic>:<partition>:<offset>, within Kafka's range")
    return found[1], int(found[2]), int(found[3])


async def read_records(
    options: Mapping[str, Any], topics: list[str], *, partition: int | None = None
) -> list[DeadLetter]:
    """Every record of `topics` (of their `partition` only, when given) up to their high watermark:
    headers and key, not the payload."""
    return await _read(options, topics, None, partition)


async def read_at(
    options: Mapping[str, Any], positions: Collection[tuple[str, int, int]]
) -> list[DeadLetter]:
    """The records at `positions` (topic, partition, offset), payload included; absent ones left out."""
    return await _read(options, [], set(positions)) if positions else []


async def _read(
    options: Mapping[str, Any],
    topics: list[str],
    wanted: set[tuple[str, int, int]] | None,
    partition: int | None = None,
) -> list[DeadLetter]:
    """BrokersUnavailable when the brokers refuse, fail or do not answer in time."""
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, fetch_max_wait_ms=20)
    try:
        # started within the try: a start that fails has opened connections too, which stop() closes
        await asyncio.wait_for(consumer.start(), READ_S)
        cluster = await asyncio.wait_for(consumer._client.fetch_all_metadata(), READ_S)
        # per partition, the offsets to read from and to (None: from the beginning, to the end)
        span: dict[TopicPartition, tuple[int, int] | None] = {}
        if wanted is None:
            span = {
                TopicPartition(t, p): None
                for t in topics
                for p in cluster.partitions_for_topic(t) or ()
                if partition is None or p == partition
            }
        for t, p, o in wanted or ():
            if p in (cluster.partitions_for_topic(t) or ()):
                first, last = span.get(TopicPartition(t, p)) or (o, o)
                span[TopicPartition(t, p)] = (min(first, o), max(last, o))
        if not span:
            return []
        consumer.assign(list(span))
        if wanted is None:
            await consumer.seek_to_beginning(*span)
        for tp, bounds in span.items():
            if bounds is not None:
                consumer.seek(tp, bounds[0])
        out: list[DeadLetter] = []
        pending = set(span)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + IDLE_S
        while pending and loop.time() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            if batch:
                deadline = loop.time() + IDLE_S
            for records in batch.values():
                out += [
                    _letter(r, wanted)
                    for r in records
                    if wanted is None or (r.topic, r.partition, r.offset) in wanted
                ]
            for tp in list(pending):
                hw, position, bounds = consumer.highwater(tp), await consumer.position(tp), span[tp]
                if (hw is not None and position >= hw) or (bounds is not None and position > bounds[1]):
                    pending.discard(tp)
        if pending:  # a part of the letters only: never taken for all of them (a list, a replay)
            raise _Stalled(len(pending))
        return out
    except _Stalled as exc:
        raise BrokersUnavailable(
            f"dead letters not read: {exc.partitions} partition(s) gave nothing for {IDLE_S:g} s "
            "before their end was reached"
        ) from None
    except (TimeoutError, KafkaError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            detail = f"the brokers did not answer within {READ_S:g} s"
        else:
            said = safe_error_message(exc)
            detail = said if type(exc).__name__ in said else f"{type(exc).__name__}: {said}"
        raise BrokersUnavailable(f"dead letters not read: {detail}"[:300]) from exc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)


class _Stalled(Exception):
    def __init__(self, partitions: int) -> None:
        super().__init__(partitions)
        self.partitions = partitions


def _letter(r: Any, wanted: set[tuple[str, int, int]] | None) -> DeadLetter:
    return DeadLetter(
        r.topic,
        r.partition,
        r.offset,
        r.timestamp,
        bytes(r.key).decode("utf-8", "replace") if r.key is not None else None,
        text_headers(r),  # a null header (not one the hub writes) as "", not a failed listing
        None if wanted is None else bytes(r.value or b""),
    )


_BSN_FIELD = re.compile(r"bsn|burgerservicenummer", re.IGNORECASE)
# A block about the youth: its BSN is the one a letter is about. A block about someone else (a parent,
# a guardian, a contact person) is never looked into: a BSN there is not the youth's.
_YOUTH_BLOCK = re.compile(r"verdachte|betrokkene|jongere|jeugdige|youth|kind|child|leerling", re.IGNORECASE)
_OTHERS_BLOCK = re.compile(r"ouder|parent|guardian|verzorger|voogd|vertegenwoordiger|contact", re.IGNORECASE)


def bsn_in_key_or_payload(key: str | None, payload: bytes | None) -> str | None:
    """The BSN a letter names: the one in its payload, else its key when that is one; None when
    neither names one.

    In a JSON payload, a value under a BSN field (a string, or a number as some senders send it) that
    passes the elfproef: one within the youth's own block first, then the nearest to the top, never
    one within a parent's, guardian's or contact person's block; else a key that is a BSN (a malformed
    record's), the nearest to the top. A CSV payload (leerplicht) names it in its BSN column: the first
    data row's is taken. A sender's key is looked at only when the payload names no BSN: a reference of
    nine digits passes the elfproef about one time in eleven.
    """
    found = _bsn_in_payload(payload) if payload else None
    if found is None and is_valid_bsn(key):
        found = normalise_bsn(str(key))
    return found


def _bsn_in_payload(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return _bsn_in_csv(payload)
    if not isinstance(data, dict | list):
        return None
    first: str | None = None
    keyed: str | None = None  # a BSN used as a key: only when no field names one
    # breadth first, so the nearest to the top comes first; each node with whether it is within the
    # youth's block
    queue: deque[tuple[Any, bool]] = deque([(data, False)])
    while queue:
        node, youths = queue.popleft()
        items = node.items() if isinstance(node, dict) else ((None, v) for v in node)
        for name, value in items:
            label = str(name) if name is not None else ""
            if _OTHERS_BLOCK.search(label):
                continue
            keyed = keyed or _as_bsn(label)
            within = youths or _YOUTH_BLOCK.search(label) is not None
            if isinstance(value, dict | list):
                queue.append((value, within))
            elif name is not None and _BSN_FIELD.search(label) and (bsn := _as_bsn(value)) is not None:
                if within:
                    return bsn
                first = first or bsn
    return first or keyed


def _as_bsn(value: object) -> str | None:
    """A BSN as a string or a number (which has lost a leading zero); None when it is none."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return normalise_bsn(value) if isinstance(value, str) and is_valid_bsn(value) else None


def _bsn_in_csv(payload: bytes) -> str | None:
    """The BSN of the first data row of a CSV with a BSN column; None when it is no such CSV."""
    text = payload.decode("utf-8-sig", "replace")
    header_line = text.split("\n", 1)[0]
    delimiter = max(";,\t", key=header_line.count)
    try:
        rows = csv.reader(io.StringIO(text), delimiter=delimiter)
        header, first = next(rows, []), next(rows, [])
    except csv.Error:
        return None
    names = [cell.strip().casefold() for cell in header]
    for column in ("bsn", "burgerservicenummer"):
        if column in names and names.index(column) < len(first):
            return _as_bsn(first[names.index(column)])
    return None


def bsn_values(payload: bytes) -> set[str]:
    """Every value a payload names as a BSN, valid or not, stripped and an 8-digit one padded with a 0:
    more than one, and it names several people (a batch). Empty when it names none.

    In JSON, each value under a BSN field (a string or a number; `null` as "", a flag as none) at any
    depth, within arrays too (a batch of records), except within a parent's, guardian's or contact
    person's block. In a CSV with a BSN column, each data row's cell: a row with an empty or no cell
    names someone all the same (""). `bsn_in_key_or_payload` takes one, the first valid one: a batch of
    several youths is whose?
    """
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return _csv_bsn_cells(payload)
    found: set[str] = set()
    queue: deque[Any] = deque([data] if isinstance(data, dict | list) else [])
    while queue:
        node = queue.popleft()
        items = node.items() if isinstance(node, dict) else ((None, v) for v in node)
        for name, value in items:
            label = str(name) if name is not None else ""
            if _OTHERS_BLOCK.search(label):
                continue
            if isinstance(value, dict | list):
                queue.append(value)
            elif name is not None and _BSN_FIELD.search(label) and not isinstance(value, bool):
                found.add("" if value is None else normalise_bsn(str(value)))
    return found


def _csv_bsn_cells(payload: bytes) -> set[str]:
    """The BSN cell of every data row of a CSV with a BSN column ("" when empty or missing)."""
    text = payload.decode("utf-8-sig", "replace")
    delimiter = max(";,\t", key=text.split("\n", 1)[0].count)
    found: set[str] = set()
    try:
        rows = csv.reader(io.StringIO(text), delimiter=delimiter)
        names = [cell.strip().casefold() for cell in next(rows, [])]
        column = next((names.index(c) for c in ("bsn", "burgerservicenummer") if c in names), None)
        for row in rows if column is not None else ():
            if column is not None and any(cell.strip() for cell in row):
                found.add(normalise_bsn(row[column]) if column < len(row) else "")
    except csv.Error:
        pass
    return found
