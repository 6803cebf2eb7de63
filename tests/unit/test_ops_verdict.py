"""Burrow-style verdicts over synthetic windows of lag samples."""

from __future__ import annotations

from hub.ops.verdict import GroupSample, Verdict, evaluate, partition_verdict

TP = ("t", 0)


def _window(offsets: list[int], lags: list[int], members: int | None = 1) -> list[GroupSample]:
    return [
        GroupSample(at=float(i), committed={TP: o}, lag={TP: lag}, members=members)
        for i, (o, lag) in enumerate(zip(offsets, lags, strict=True))
    ]


def test_a_moment_without_lag_is_ok() -> None:
    assert evaluate(_window([1, 1, 1], [5, 0, 5])).status is Verdict.OK


def test_shrinking_lag_with_moving_offsets_is_ok() -> None:
    assert evaluate(_window([10, 20, 30], [30, 20, 10])).status is Verdict.OK


def test_lag_growing_while_offsets_move_is_warn() -> None:
    assert evaluate(_window([10, 20, 30], [5, 9, 14])).status is Verdict.WARN


def test_frozen_offsets_with_lag_and_a_live_consumer_is_stall() -> None:
    assert evaluate(_window([7, 7, 7], [3, 4, 6], members=1)).status is Verdict.STALL


def test_frozen_offsets_with_lag_and_no_consumer_is_stop() -> None:
    assert evaluate(_window([7, 7, 7], [3, 3, 3], members=0)).status is Verdict.STOP


def test_the_group_takes_its_worst_partition() -> None:
    window = [
        GroupSample(at=i, committed={("t", 0): 10 * i, ("t", 1): 4}, lag={("t", 0): 9 - i, ("t", 1): 2})
        for i in range(3)
    ]
    result = evaluate(window)
    assert result.partitions == {("t", 0): Verdict.OK, ("t", 1): Verdict.STALL}
    assert result.status is Verdict.STALL


def test_one_sample_is_not_a_trend() -> None:
    assert partition_verdict([3], [8], alive=True) is Verdict.OK
    assert evaluate([]).status is Verdict.OK
