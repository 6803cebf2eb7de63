"""Replay jobs: one replay of many dead letters at a time, and only the recent finished jobs kept."""

from __future__ import annotations

import asyncio

import pytest

from hub.ops.dlq import KEEP_JOBS, DeadLetters, ReplayBusy, ReplayJob
from hub.ops.dlq_records import DeadLetter
from hub.store import Store

pytestmark = pytest.mark.integration


def letter(offset: int) -> DeadLetter:
    return DeadLetter("t.dlq.v1", 0, offset, 0, None, {})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_second_bulk_replay_waits_for_the_first_and_old_jobs_are_forgotten(store: Store) -> None:
    letters = DeadLetters(store, {"bootstrap_servers": "127.0.0.1:9"}, ["t.dlq.v1"])
    running = ReplayJob(id="running", total=500, operator="olaf")
    letters.jobs[running.id] = running  # a replay of 500 letters under way
    with pytest.raises(ReplayBusy) as busy:
        letters.start_replay([letter(1), letter(2)], "piet")
    assert busy.value.job is running and "running" in str(busy.value)
    for n in range(KEEP_JOBS + 50):  # finished jobs pile up
        letters.jobs[f"done-{n}"] = ReplayJob(id=f"done-{n}", total=1, operator="olaf", state="done")
    one = letters.start_replay([letter(3)], "piet")  # a single letter goes beside it
    try:
        assert sum(j.state == "done" for j in letters.jobs.values()) == KEEP_JOBS - 1
        assert "done-0" not in letters.jobs and f"done-{KEEP_JOBS + 49}" in letters.jobs
        assert {"running", one.id} <= set(letters.jobs)
    finally:
        assert one.task is not None
        one.task.cancel()
        await asyncio.gather(one.task, return_exceptions=True)
