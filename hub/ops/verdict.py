"""Burrow-style verdicts per consumer group over a window of lag samples, without fixed thresholds.

Burrow's rules (github.com/linkedin/Burrow/wiki/Consumer-Lag-Evaluation-Rules), per partition:
- any sample in the window with lag 0: OK;
- committed offset unchanged over the whole window with lag > 0: the consumer is stuck. Burrow tells
  STOP (no commits at all within the window: the consumer is gone) from STALL (the consumer keeps
  committing, but the same offset). Kafka gives no commit timestamps, so liveness comes from the group's
  members: a group with members that does not move is STALL, a group without members is STOP;
- offsets moving but lag not shrinking (last >= first): WARN (it is falling behind);
- otherwise (offsets moving, lag shrinking): OK.
The group's verdict is the worst of its partitions'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum


class Verdict(IntEnum):
    """Ordered from good to bad, so the group's verdict is the max over its partitions."""

    OK = 0
    WARN = 1
    STALL = 2
    STOP = 3


@dataclass(frozen=True)
class GroupSample:
    """One observation of one group: committed offsets and lags per (topic, partition), and its members."""

    at: float
    committed: Mapping[tuple[str, int], int | None]
    lag: Mapping[tuple[str, int], int]
    members: int | None = None  # None: unknown (the broker would not say)


@dataclass(frozen=True)
class GroupVerdict:
    """The verdict of a group and of each of its partitions."""

    status: Verdict
    partitions: dict[tuple[str, int], Verdict] = field(default_factory=dict)


def partition_verdict(offsets: Sequence[int | None], lags: Sequence[int], *, alive: bool | None) -> Verdict:
    """Burrow's rules for one partition over a window (oldest first)."""
    if not lags or any(lag == 0 for lag in lags):
        return Verdict.OK
    if len(lags) < 2:
        return Verdict.OK  # one sample shows lag, not a trend
    if len(set(offsets)) == 1:
        return Verdict.STOP if alive is False else Verdict.STALL
    if lags[-1] >= lags[0]:
        return Verdict.WARN
    return Verdict.OK


def evaluate(window: Sequence[GroupSample]) -> GroupVerdict:
    """The group's verdict over its window (oldest sample first)."""
    if not window:
        return GroupVerdict(Verdict.OK)
    latest = window[-1]
    alive = None if latest.members is None else latest.members > 0
    result: dict[tuple[str, int], Verdict] = {}
    for tp in latest.lag:
        samples = [s for s in window if tp in s.lag]
        offsets = [s.committed.get(tp) for s in samples]
        lags = [s.lag[tp] for s in samples]
        result[tp] = partition_verdict(offsets, lags, alive=alive)
    return GroupVerdict(max(result.values(), default=Verdict.OK), result)
