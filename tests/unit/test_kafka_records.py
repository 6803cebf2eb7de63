"""The fetcher's record reader (hub/kafka_records.py): a header key that is not UTF-8 is read with
U+FFFD, every other record as aiokafka reads it, compressed or not, wherever the bad key sits."""

from __future__ import annotations

import pytest
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy, _DefaultRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords

from hub import kafka_records
from hub.kafka_records import _Records
from tests.helpers.kafka import Latin1Key

Header = tuple[str, bytes | None]


BAD = Latin1Key("x-notitie-café")


def _batch(headers: list[list[Header]], *, compression: int = 0, base: int = 0) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(
        magic=2, compression_type=compression, is_transactional=0, producer_id=-1, producer_epoch=-1,
        base_sequence=-1, batch_size=10**7,
    )  # fmt: skip
    for n, hs in enumerate(headers):
        builder.append(
            n, timestamp=1_700_000_000_000 + n, key=b"youth-a", value=b"v%d" % (base + n), headers=hs
        )
    built = bytearray(builder.build())
    built[0:8] = base.to_bytes(8, "big")  # the batch's base offset, as the broker sets it
    return bytes(built)


def _read(raw: bytes) -> list[tuple[int, bytes | None, list[Header]]]:
    records = _Records(raw)
    out = []
    while records.has_next():
        batch = records.next_batch()
        assert batch.validate_crc()
        out += [(r.offset, r.value, list(r.headers)) for r in batch]
    return out


@pytest.fixture(params=["compiled", "pure-python"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """aiokafka's compiled batch reader, or its pure-Python one (aiokafka without its extensions),
    as the one tried first."""
    if request.param == "pure-python":
        monkeypatch.setattr(kafka_records, "DefaultRecordBatch", _DefaultRecordBatchPy)
    return str(request.param)


@pytest.mark.parametrize("compression", [0, 1], ids=["plain", "gzip"])
@pytest.mark.parametrize("bad_at", [0, 2, 4])
@pytest.mark.usefixtures("reader")
def test_a_key_not_utf8_is_read_with_a_replacement_and_the_batch_goes_on(
    compression: int, bad_at: int
) -> None:
    headers: list[list[Header]] = [[("message-type", b"T")] for _ in range(5)]
    headers[bad_at] = [*headers[bad_at], (BAD, b"ok")]
    raw = _batch(headers, compression=compression) + _batch([[("a", b"1")]] * 2, base=5)
    with pytest.raises((UnicodeDecodeError, CorruptRecordException)):  # aiokafka's own reader
        [r for b in iter(MemoryRecords(raw).next_batch, None) for r in b]

    read = _read(raw)

    assert [(o, v) for o, v, _ in read] == [(n, b"v%d" % n) for n in range(7)]  # each once, in order
    assert read[bad_at][2] == [("message-type", b"T"), ("x-notitie-caf\ufffd", b"ok")]
    assert [h for n, (_, _, h) in enumerate(read) if n != bad_at] == [[("message-type", b"T")]] * 4 + [
        [("a", b"1")]
    ] * 2


def test_records_with_utf8_keys_read_as_aiokafka_reads_them() -> None:
    raw = _batch([[("message-type", b"T"), ("notitie-café", None)]] * 3, compression=1)
    ours = _read(raw)
    theirs = [(r.offset, r.value, list(r.headers)) for r in MemoryRecords(raw).next_batch()]
    assert ours == theirs and len(ours) == 3


def test_every_consumer_of_the_hub_reads_with_it() -> None:
    """The reader is aiokafka's fetcher's once the hub's Kafka module is loaded (a new aiokafka that
    no longer reads through `MemoryRecords` fails here, not in a stalled partition)."""
    import aiokafka.consumer.fetcher as fetcher

    import hub.kafka  # noqa: F401  (installs it)

    assert fetcher.MemoryRecords is _Records
