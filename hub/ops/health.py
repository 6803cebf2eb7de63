"""Topic and group health: lag samples kept in a window, verdicts, rates, DLQ depth and parked retries."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, func, or_, select

from hub.clock import aware
from hub.logging import get_logger
from hub.ops.dlq_records import read_at
from hub.ops.lag import BrokersUnavailable, LagProbe, LagSample, PartitionLag
from hub.ops.tables import dlq_actions
from hub.ops.verdict import GroupSample, Verdict, evaluate
from hub.retry.tables import parked
from hub.spine.outbox import OutboxState, outbox_state
from hub.store import Store
from hub.topics import RETRY_LADDERS, Topic

log = get_logger(__name__)
WINDOW = 10  # samples per group kept for the verdict (Burrow's default window is 10 offsets)
CACHE_S = 3.0  # a scrape or a dashboard refresh within this age reuses the last sample


def is_dlq(topic: str) -> bool:
    """A dead-letter topic: `<area>.<name>.dlq.v<N>`."""
    return ".dlq." in topic


def is_retry(topic: str) -> bool:
    """A parking topic of the retry ladder: `<area>.<name>.retry.v<N>`."""
    return ".retry." in topic


@dataclass
class Health:
    """One picture of the topics and groups, as the dashboard, /metrics and `ketenhub topics` show it."""

    sample: LagSample
    verdicts: dict[str, Verdict]
    in_rates: dict[str, float]
    out_rates: dict[str, float]
    dlq_depth: dict[str, int]
    retry_parked: dict[str, int]
    groups: list[dict[str, Any]] = field(default_factory=list)
    outbox: OutboxState | None = None

    def as_json(self) -> dict[str, Any]:
        """The shape the dashboard reads."""
        topics = sorted({t for t, _ in self.sample.offsets})
        return {
            "at": self.sample.at,
            "groups": self.groups,
            "topics": [
                {
                    "topic": t,
                    "kind": "dlq" if is_dlq(t) else "retry" if is_retry(t) else "topic",
                    "end": sum(o.end for (tt, _), o in self.sample.offsets.items() if tt == t),
                    "size": self.sample.topic_size(t),
                    "in_rate": round(self.in_rates.get(t, 0.0), 3),
                    "dlq_depth": self.dlq_depth.get(t),
                    "retry_parked": self.retry_parked.get(t),
                }
                for t in topics
            ],
            "dlq_depth": self.dlq_depth,
            "retry_parked": self.retry_parked,
            "outbox": self.outbox.as_json() if self.outbox is not None else None,
        }


def _taken(first: LagSample, before: PartitionLag | None, now: PartitionLag) -> int:
    """How many records the group took in on one partition since `first`: from where it stood then
    (its committed offset, or the log's start when it had none or was behind it) to its committed
    offset now. Records the broker deleted unread are no throughput (the log's start moving on while
    the group stands still, or its first commit on a log that no longer starts at 0)."""
    if now.committed is None:
        return 0
    offsets = first.offsets.get((now.topic, now.partition))
    start = offsets.start if offsets is not None else 0
    since = before.committed if before is not None and before.committed is not None else start
    return max(now.committed - max(since, start), 0)


class Monitor:
    """Samples lag (on demand, cached, and every `interval_s` in the background) and judges each group."""

    def __init__(
        self,
        probe: LagProbe,
        store: Store,
        *,
        topics: list[str],
        groups: Callable[[], dict[str, set[str]]],
        group_prefix: str,
        cache_s: float = CACHE_S,
        ladders: Mapping[str, Topic] = RETRY_LADDERS,
    ) -> None:
        self.probe, self.store, self.topics, self.ladders = probe, store, topics, ladders
        self.groups, self.group_prefix, self.cache_s = groups, group_prefix, cache_s
        self.samples: deque[LagSample] = deque(maxlen=WINDOW)
        # the time of the letter at a resolved DLQ position, read once; a partition's end seen last
        self._letter_ts: dict[tuple[str, int, int], int] = {}
        self._ends: dict[tuple[str, int], int] = {}
        self._lock = asyncio.Lock()

    async def sample(self) -> LagSample:
        """A fresh sample, added to the window."""
        groups: dict[str, set[str] | None] = dict(self.groups())
        s = await self.probe.measure(self.topics, groups, discover_prefix=self.group_prefix)
        self.samples.append(s)
        return s

    async def latest(self) -> LagSample:
        """The last sample if younger than the cache age, else a new one (scrapes must not hammer Kafka)."""
        async with self._lock:
            if self.samples and time.time() - self.samples[-1].at < self.cache_s:
                return self.samples[-1]
            return await self.sample()

    async def run(self, interval_s: float) -> None:
        """Sample until cancelled, so verdicts have a window even when nobody looks; then close the probe."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await self.latest()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("lag sample failed", error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            await self.probe.close()

    def verdicts(self) -> dict[str, Verdict]:
        """Burrow-style verdict of every group in the window."""
        names = {p.group for s in self.samples for p in s.lags}
        out = {}
        for g in sorted(names):
            window = [
                GroupSample(
                    at=s.at,
                    committed={(p.topic, p.partition): p.committed for p in s.lags if p.group == g},
                    lag={(p.topic, p.partition): p.lag for p in s.lags if p.group == g},
                    members=s.members.get(g),
                )
                for s in self.samples
            ]
            out[g] = evaluate([w for w in window if w.lag]).status
        return out

    async def resolved(self, offsets: Mapping[tuple[str, int], Any]) -> dict[tuple[str, int], set[int]]:
        """Offsets of dead letters replayed or discarded, per DLQ partition, within what the partition
        holds now: an action counts only for the letter it was taken on (0020), so a new letter at an
        old position (a topic that started over) stays open."""
        c = dlq_actions.c
        # only the actions within what each partition holds now (`ux_dlq_actions_record` serves it):
        # every action ever taken was read on each look of the dashboard and each scrape, and the
        # actions are kept for good
        ranges = [
            and_(c.dlq_topic == t, c.partition == p, c.offset >= o.start, c.offset < o.end)
            for (t, p), o in offsets.items()
            if o.end > o.start
        ]
        rows = []
        if ranges:
            async with self.store.connect() as conn:
                query = select(c.dlq_topic, c.partition, c.offset, c.letter_at, c.at).where(or_(*ranges))
                rows = list((await conn.execute(query)).all())
        for tp, o in offsets.items():  # a partition that started over: its letters are new ones
            if o.end < self._ends.get(tp, 0):
                self._letter_ts = {k: v for k, v in self._letter_ts.items() if k[:2] != tp}
            self._ends[tp] = o.end
        held = [r for r in rows if (r.dlq_topic, r.partition) in offsets]
        held = [
            r
            for r in held
            if offsets[r.dlq_topic, r.partition].start <= r.offset < offsets[r.dlq_topic, r.partition].end
        ]
        unknown = {(r.dlq_topic, int(r.partition), int(r.offset)) for r in held} - set(self._letter_ts)
        if unknown:
            try:
                for d in await read_at(self.probe.options, unknown):
                    self._letter_ts[d.position] = d.timestamp_ms
            except BrokersUnavailable:
                pass  # counted by position this time, as before 0020
        out: dict[tuple[str, int], set[int]] = {}
        for r in held:
            position = (r.dlq_topic, int(r.partition), int(r.offset))
            ts = self._letter_ts.get(position)
            acted_ms = aware(r.at).timestamp() * 1000
            if ts is None or r.letter_at == ts or (r.letter_at is None and ts <= acted_ms):
                out.setdefault(position[:2], set()).add(position[2])
        return out

    async def parked(self) -> dict[str, int]:
        """Messages parked per ladder: those that failed and wait for their next rung (or were put
        off when the hub's own store failed on their way), and those of the same key waiting behind
        them. A retry topic only announces each parking (no group reads it), so its offsets count
        every parking of the last week, not what waits now."""
        p, q = parked.alias("p"), parked.alias("q")
        held = (q.c.attempt > 0) | (q.c.postponed > 0)
        failed = select(q.c.seq).where(q.c.ladder == p.c.ladder, q.c.key == p.c.key, held)
        query = select(p.c.ladder, func.count()).where(exists(failed)).group_by(p.c.ladder)
        async with self.store.connect() as conn:
            return {ladder: int(n) for ladder, n in await conn.execute(query)}

    async def health(self) -> Health:
        """Lag, verdicts, rates, DLQ depth and parked retries, from the latest sample."""
        s = await self.latest()
        first = self.samples[0]
        span = s.at - first.at
        in_rates, out_rates = {}, {}
        for t in {t for t, _ in s.offsets}:
            before = sum(o.end for (tt, _), o in first.offsets.items() if tt == t)
            now = sum(o.end for (tt, _), o in s.offsets.items() if tt == t)
            in_rates[t] = (now - before) / span if span > 0 else 0.0
        resolved = await self.resolved({tp: o for tp, o in s.offsets.items() if is_dlq(tp[0])})
        dlq_depth: dict[str, int] = {}
        retry_parked: dict[str, int] = {}
        for (t, p), o in s.offsets.items():
            if is_dlq(t):
                done = len(resolved.get((t, p), ()))
                dlq_depth[t] = dlq_depth.get(t, 0) + max(o.end - o.start - done, 0)
            elif is_retry(t):
                retry_parked.setdefault(t, 0)
        for ladder, n in (await self.parked()).items():
            if ladder in self.ladders:
                retry = self.ladders[ladder].retry
                for t in retry_parked:
                    if t.endswith(retry):
                        retry_parked[t] += n
        verdicts = self.verdicts()
        groups = []
        for g in sorted({p.group for p in s.lags}):
            mine = [p for p in s.lags if p.group == g]
            per_topic = []
            for t in sorted({p.topic for p in mine}):
                ps = [p for p in mine if p.topic == t]
                earlier = {p.partition: p for p in first.lags if p.group == g and p.topic == t}
                taken = sum(_taken(first, earlier.get(p.partition), p) for p in ps)
                out_rates[f"{g}|{t}"] = taken / span if span > 0 else 0.0
                per_topic.append(
                    {
                        "topic": t,
                        "lag": sum(p.lag for p in ps),
                        "expired_unread": sum(p.expired for p in ps),
                        "lag_seconds": round(max(p.lag_seconds for p in ps), 3),
                        "out_rate": round(out_rates[f"{g}|{t}"], 3),
                        "in_rate": round(in_rates.get(t, 0.0), 3),
                        "partitions": [
                            {"partition": p.partition, "committed": p.committed, "end": p.end, "lag": p.lag}
                            for p in ps
                        ],
                    }
                )
            groups.append(
                {
                    "group": g,
                    "verdict": verdicts.get(g, Verdict.OK).name,
                    "lag": sum(p.lag for p in mine),
                    "lag_seconds": round(max((p.lag_seconds for p in mine), default=0.0), 3),
                    "topics": per_topic,
                }
            )
        outbox = await outbox_state(self.store)
        return Health(s, verdicts, in_rates, out_rates, dlq_depth, retry_parked, groups, outbox)
