"""Message ids and Kafka partitioning: the fast versions keep the meaning of the standard ones."""

from __future__ import annotations

import os
import uuid

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.kafka import KeyPartitioner, murmur2
from schemas.envelope import new_id
from schemas.pseudonym import youth_key


def test_new_ids_are_distinct_version_4_uuids() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:2_000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent holds a pool of randomness the child would otherwise copy
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 100).decode()
    os.close(read)
    assert uuid.UUID(from_child).version == 4
    assert from_child != new_id()


def test_key_partitioner_agrees_with_kafkas_default_also_after_its_cache_is_full() -> None:
    default, ours = DefaultPartitioner(), KeyPartitioner(size=50)
    for partitions in ([0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]):
        for n in range(300):
            key = youth_key("secret-" + "x" * 40, f"{n:09d}").encode()
            expected = default(key, partitions, partitions)
            assert ours(key, partitions, partitions) == expected
            assert ours(key, partitions, partitions) == expected  # from the cache
    assert ours(None, [0, 1, 2, 3], [2]) == 2  # no key: an available partition, as the default does


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_murmur2_gives_what_aiokafkas_gives(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


def test_murmur2_on_every_length_of_tail_and_known_values() -> None:
    for length in range(0, 70):
        data = bytes((7 * i + length) % 256 for i in range(length))
        assert murmur2(data) == aiokafka_murmur2(data), length
    # from the Java client's own tests (UtilsTest.testMurmur2), as unsigned values
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-longer-string") == -1486304829 & 0xFFFFFFFF
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971 & 0xFFFFFFFF
    assert murmur2(bytes([ord("a"), ord("b"), ord("c")])) == 479470107


def test_a_serving_process_freezes_its_start_up_and_collects_less_often() -> None:
    import subprocess
    import sys

    code = (
        "import gc; from hub.runtime import tune_gc_for_serving; tune_gc_for_serving(); "
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["100000", "True"]
