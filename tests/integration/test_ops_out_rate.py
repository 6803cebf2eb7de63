"""The console's rate out of a topic (records a group took in a second) when the log no longer
starts at 0: records the broker deleted unread are no throughput.

The embedded broker cannot delete records (no DeleteRecords), so the probe's two samples are given to
the real Monitor by a stand-in for the hub's own LagProbe; the store is real."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hub.ops.health import Monitor
from hub.ops.lag import LagSample, PartitionLag, PartitionOffsets
from hub.store import Store

pytestmark = pytest.mark.integration
TOPIC, GROUP = "referral.received.v1", "ketenhub-intake"


def sample(at: float, start: int, end: int, committed: int | None) -> LagSample:
    """One partition as the probe sees it: the log from `start` to `end`, the group at `committed`."""
    s = LagSample(at=at)
    s.offsets[(TOPIC, 0)] = PartitionOffsets(TOPIC, 0, start, end)
    position = start if committed is None else max(committed, start)
    s.lags.append(PartitionLag(GROUP, TOPIC, 0, committed, end, max(end - position, 0), 0.0))
    return s


class Samples:
    """The hub's LagProbe as the Monitor uses it, handing out the samples given, in order."""

    def __init__(self, *samples: LagSample) -> None:
        self.samples = list(samples)
        self.options: dict[str, Any] = {}

    async def measure(self, *args: Any, **kwargs: Any) -> LagSample:
        return self.samples.pop(0)

    async def close(self) -> None:
        pass


async def out_rate(store: Store, first: LagSample, then: LagSample) -> float:
    """The rate the console shows for the group on the topic, `then` 10 s after `first`."""
    now = time.time()
    first.at, then.at = now - 10, now
    monitor = Monitor(
        Samples(first, then), store, topics=[TOPIC], groups=dict, group_prefix="ketenhub-", cache_s=0
    )  # type: ignore[arg-type]
    await monitor.sample()
    health = await monitor.health()
    [group] = health.groups
    return float(group["topics"][0]["out_rate"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("before", "after", "taken"),
    [
        # a first commit on a log that starts at 5000 (what went before deleted): 3 records taken in
        ((5000, 5003, None), (5000, 5003, 5003), 3),
        # a group behind the log's start: the deleted records are lost, not taken in; then 3 read
        ((5000, 5003, 10), (5000, 5003, 5003), 3),
        # a group that stands still while retention deletes what it had not read: nothing taken in
        ((4000, 5003, 4500), (5000, 5003, 4500), 0),
        # as before the change: a log from 0, a group reading on
        ((0, 100, 40), (0, 100, 70), 30),
    ],
)
async def test_the_rate_out_counts_what_the_group_took_in_not_what_the_broker_deleted(
    store: Store, before: tuple[int, int, int | None], after: tuple[int, int, int | None], taken: int
) -> None:
    """It compared committed offsets, or 0 without one: a group's first commit on a log that no longer
    starts at 0 showed as thousands of records a second, and records deleted unread as throughput."""
    rate = await out_rate(store, sample(0, *before), sample(0, *after))
    assert rate == pytest.approx(taken / 10, abs=0.02)
