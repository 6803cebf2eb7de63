"""Reading fetched records whose header keys are not UTF-8.

A Kafka header's key is a string on the wire, and aiokafka's record reader decodes it as strict UTF-8.
A partner's record whose header key is not (a Latin-1 `café`) raised inside the fetcher: the records
read before it in that fetch were dropped, the position was moved to the bad record, and every fetch
failed on it again. Its partition, every youth on it, stood still, with no dead letter and nothing
to say why.

`install()` gives the fetcher a reader that reads each batch with aiokafka's compiled reader as
before and, only when a key in it cannot be decoded, reads the rest of that batch again with the
pure-Python reader, the key decoded with U+FFFD for what is not UTF-8 (as the hub shows a header
value that is not). Such a header is one the hub does not know, so its record is handled as any
other; dead-lettered for another reason, its letter carries the key as read.
"""

from __future__ import annotations

from typing import Any

import aiokafka.consumer.fetcher as _fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatch, _DefaultRecordBatchPy
from aiokafka.record.memory_records import _MemoryRecordsPy


class _Lenient(bytearray):
    """A batch's bytes whose slices decode as UTF-8 with U+FFFD for what is not (a header's key)."""

    def __getitem__(self, index: Any) -> Any:
        got = super().__getitem__(index)
        return _Lenient(got) if isinstance(index, slice) else got

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return super().decode(encoding, "replace")


class _LenientBatch(_DefaultRecordBatchPy):  # type: ignore[misc]  # final to type checkers only
    """aiokafka's pure-Python batch reader, its header keys decoded leniently (`_Lenient`)."""

    def __init__(self, buffer: Any) -> None:
        super().__init__(buffer)
        self._buffer = _Lenient(self._buffer)  # type: ignore[has-type]

    def _maybe_uncompress(self) -> None:
        if not self._decompressed:
            super()._maybe_uncompress()
            self._buffer = _Lenient(self._buffer)


class _Batch:
    """One record batch: the compiled reader's records; from a key it cannot decode on, the lenient
    reader's (the records before it skipped, as already given)."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._batch = DefaultRecordBatch(data)
        self._given = 0
        self._lenient: _LenientBatch | None = None

    def __getattr__(self, name: str) -> Any:  # the batch's header fields, its CRC check
        return getattr(self._batch, name)

    def __iter__(self) -> _Batch:
        iter(self._batch)
        return self

    def __next__(self) -> Any:
        if self._lenient is None:
            try:
                record = next(self._batch)
            except (UnicodeDecodeError, CorruptRecordException) as exc:
                if not _undecodable(exc):
                    raise
                self._lenient = _lenient_from(self._data, skip=self._given)
            else:
                self._given += 1
                return record
        return next(self._lenient)


def _undecodable(exc: Exception) -> bool:
    """A key that is not UTF-8: raised as it is by the compiled reader, wrapped by the pure-Python
    one (aiokafka without its extensions)."""
    return isinstance(exc, UnicodeDecodeError) or isinstance(exc.__cause__, UnicodeDecodeError)


def _lenient_from(data: memoryview, *, skip: int) -> _LenientBatch:
    batch = _LenientBatch(data)
    iter(batch)  # decompresses
    for _ in range(skip):
        next(batch)
    return batch


class _Records(_MemoryRecordsPy):  # type: ignore[misc]  # final to type checkers only
    """The fetched bytes split into batches (aiokafka's pure-Python splitter: a few µs a batch more
    than its compiled one); version 2 batches read by `_Batch`, older ones as aiokafka reads them."""

    def next_batch(self) -> Any:
        data = self._next_slice
        if data is None or len(data) < self.MIN_SLICE or data[self.MAGIC_OFFSET] < 2:
            return super().next_batch()  # none left, a short one (refused there), or an old format
        self._cache_next()
        return _Batch(data)


def install() -> None:
    """Make every aiokafka consumer of this process read records with `_Records` (idempotent)."""
    _fetcher.MemoryRecords = _Records
