"""Retention (DESIGN, "Partners, security, privacy"): personal data past its term is purged.

Three terms, in `KETENHUB_RETENTION__*`:
- a youth's case (referrals, consents, handovers) goes `case_days` after the last thing that happened
  in it (a referral received, a consent recorded or withdrawn, a handover changed), and only when no
  consent is still in force and no signal of the youth is left: a case is purged whole, never a
  referral under a consent still kept. A handover under way changes within the term; one idle for
  the whole term is forgotten, not under way, and held its case for ever. An operator's reason for a
  dead-letter action (free text) is blanked after the same term, a problem resolved that long
  ago (its resolution may be an administrator's free text) is deleted, and so is the record of whose
  mailbox a mail reached (`mail_sent`) that long after it was sent;
- a signal and its matches go `signal_days` after the signal's end date (rule 12), or after the day it
  was withdrawn (rule 15: wrongly registered, or the risk gone, it has no use left) once the dead
  letters of its earlier commands are past the DLQ topic's term (30 days), once its last
  command was delivered or its dead letter passed the DLQ topic's term (30 days: nothing can replay
  it), or it was lost on its way (published and never taken in before the signal topic's retention
  ended, and nothing of the youth queued or parked since, 30 days on); a signal whose command still
  waits, or can still be replayed, stays in sight;
- audit entries go after `audit_days`, at least five years (rule 18; the database refuses earlier).

A case written to while it is purged: the purge holds the youth's case lock (hub.store.locks) from
its last look at the case to its commit, or leaves the youth for the next run when another holds
it. Recording a consent or asking a handover, which refer to the case's referral, holds it too:
they either commit first, and the purge finds the case busy, or wait, and then find the referral
gone (404). Each delete takes only rows past their own term and not under a row kept, so a
referral taken in meanwhile (intake takes no case lock) stays as the start of a new case, and a
consent withdrawn or a handover answered meanwhile keeps the referral it stands on.

Every purge is itself a change of personal data: one `retention.purged` audit entry per youth, under
its youth key, with what was removed (ids and counts, never a BSN or a name); purged audit entries
are counted in one `retention.audit_purged` entry. `ketenhub retention [--dry-run]` runs it by hand;
the hub runs it every `interval_h` hours.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import audit_row, write_audits
from hub.clock import LOCAL, local_day
from hub.consent.tables import consents
from hub.handovers.tables import handovers
from hub.intake.tables import referrals
from hub.logging import get_logger
from hub.notify.tables import mail_problems, mail_sent
from hub.ops.tables import dlq_actions
from hub.retention.config import RetentionSettings
from hub.retry.tables import parked
from hub.signals.tables import matches, signals
from hub.spine.outbox import PARKED_TERM
from hub.store import Store
from hub.store.locks import try_lock_youths
from hub.store.tables import audit_log, outbox
from hub.topics import VERWIJSINDEX_GROUP
from schemas.envelope import utcnow
from schemas.signal import SignalStatus

log = get_logger(__name__)
SYSTEM = "ketenhub-retention"
CHUNK = 200  # youths or signals purged a transaction
WITHDRAWN = (SignalStatus.INGETROKKEN_ONTERECHT.value, SignalStatus.BEEINDIGD_RISICO_WEG.value)  # rule 15
SETTLED = ("delivered", "withheld")  # a signal's last command reached the Verwijsindex, or needed not
ON_ITS_WAY = ("queued", "retrying")  # a signal's last command not yet delivered, withheld or dead-lettered
AUDIT_CHUNK = 5_000  # audit entries deleted a transaction (SQLite's one writer is not held long)


@dataclass
class Purged:
    """What a run removed (or, dry, would remove)."""

    youths: int = 0
    referrals: int = 0
    consents: int = 0
    handovers: int = 0
    signals: int = 0
    matches: int = 0
    audit_entries: int = 0
    dry_run: bool = False
    by_youth: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def as_json(self) -> dict[str, Any]:
        """Counts only."""
        return {
            "youths": self.youths,
            "referrals": self.referrals,
            "consents": self.consents,
            "handovers": self.handovers,
            "signals": self.signals,
            "matches": self.matches,
            "audit_entries": self.audit_entries,
            "dry_run": self.dry_run,
        }


def _past_term(cutoff: datetime, today: date) -> dict[str, ColumnElement[bool]]:
    """Per table, whether a row of an idle case is past its term itself: what `_old_cases` found of
    the case as a whole, asked again of each row as it is deleted (handovers first, then consents,
    then referrals). A row kept (changed meanwhile: a withdrawal, a receiver's answer) keeps what it
    stands on: a consent stays while a handover of the youth stays, a referral while either does."""
    handover_left = exists().where(handovers.c.youth_key == consents.c.youth_key)
    return {
        "handovers": handovers.c.updated_at < cutoff,
        "consents": and_(
            consents.c.recorded_at < cutoff,
            or_(consents.c.withdrawn_at.is_(None), consents.c.withdrawn_at < cutoff),
            not_(and_(consents.c.status == "ACTIEF", consents.c.valid_until >= today)),
            ~handover_left,
        ),
        "referrals": and_(
            referrals.c.received_at < cutoff,
            ~exists().where(consents.c.youth_key == referrals.c.youth_key),
            ~exists().where(handovers.c.youth_key == referrals.c.youth_key),
        ),
    }


async def _old_cases(
    session: AsyncSession, cutoff: datetime, today: date, going: set[str], *, among: list[str] | None = None
) -> list[str]:
    """Youth keys whose case saw nothing since `cutoff`, with no consent still in force, no handover
    under way, and no signal left but those of `going` (purged in this run: a dry run counts as the
    real one would)."""
    # A case is found from any of its parts: a consent or handover recorded through the API has no
    # referral in the hub. Whatever is recent in any part keeps the case (below).
    idle = (
        select(referrals.c.youth_key)
        .group_by(referrals.c.youth_key)
        .having(func.max(referrals.c.received_at) < cutoff),
        select(consents.c.youth_key)
        .group_by(consents.c.youth_key)
        .having(func.max(consents.c.recorded_at) < cutoff),
        select(handovers.c.youth_key)
        .group_by(handovers.c.youth_key)
        .having(func.max(handovers.c.updated_at) < cutoff),
    )
    keys: set[str] = set()
    for query in idle:
        if among is not None:
            query = query.where(query.selected_columns[0].in_(among))
        keys |= set((await session.execute(query)).scalars())
    if not keys:
        return []
    busy: set[str] = set()
    for chunk in _chunks(sorted(keys)):
        busy |= set(
            (
                await session.execute(
                    select(referrals.c.youth_key).where(
                        referrals.c.youth_key.in_(chunk), referrals.c.received_at >= cutoff
                    )
                )
            ).scalars()
        )
        busy |= set(
            (
                await session.execute(
                    select(consents.c.youth_key).where(
                        consents.c.youth_key.in_(chunk),
                        (consents.c.recorded_at >= cutoff)
                        | (consents.c.withdrawn_at >= cutoff)
                        | ((consents.c.status == "ACTIEF") & (consents.c.valid_until >= today)),
                    )
                )
            ).scalars()
        )
        busy |= set(
            (
                await session.execute(
                    select(handovers.c.youth_key).where(
                        handovers.c.youth_key.in_(chunk),
                        handovers.c.updated_at >= cutoff,
                    )
                )
            ).scalars()
        )
        signalled = select(signals.c.youth_key, signals.c.signal_id).where(signals.c.youth_key.in_(chunk))
        busy |= {key for key, signal_id in await session.execute(signalled) if signal_id not in going}
    return sorted(keys - busy)


async def _ended_signals(
    session: AsyncSession,
    before: date,
    letters_gone: datetime,
    lost_before: datetime | None,
    among: list[str] | None = None,
) -> list[tuple[str, str]]:
    """(signal id, youth key) of signals that ended before `before` (their end date), or were
    withdrawn before it and before `letters_gone` (the latest change of a withdrawn signal is on or
    after its withdrawal, and no command can follow one: a dead letter of an earlier command is past
    the DLQ's term then, and no replay finds the signal gone), their last command delivered, or
    dead-lettered before `letters_gone`; of `among` only, when given (looked at again in the purging
    transaction)."""
    settled = (
        signals.c.delivery_state.in_(SETTLED)
        # its letter is gone with the DLQ topic's term: nothing can replay the command any more
        | ((signals.c.delivery_state == "dead_lettered") & (signals.c.updated_at < letters_gone))
        # its command lost on the way, its fate never to be recorded (`_lost`)
    )
    if lost_before is not None:  # its command off every topic that could still hold it (`commands_kept`)
        settled |= signals.c.delivery_state.in_(ON_ITS_WAY) & (signals.c.updated_at < lost_before) & _lost()
    withdrawn = (
        signals.c.status.in_(WITHDRAWN)
        & (signals.c.updated_at < datetime.combine(before, time.min, LOCAL))
        & (signals.c.updated_at < letters_gone)
    )
    ended = (signals.c.end_date < before) | withdrawn
    query = select(signals.c.signal_id, signals.c.youth_key).where(ended, settled)
    if among is not None:
        query = query.where(signals.c.signal_id.in_(among))
    rows = await session.execute(query.order_by(signals.c.signal_id))
    return [(r.signal_id, r.youth_key) for r in rows]


def _lost() -> ColumnElement[bool]:
    """Whether nothing of a signal's youth is on its way any more: no outbox row keyed by the youth
    (queued; or published, and kept while the connector has not taken it in, the signal topic's
    retention at most: `Relay.watched`), and nothing parked on the Verwijsindex connector's retry
    ladder for the youth (taken in, its outcome to come). A signal still `queued` or `retrying` then,
    long after its last change, had its command lost: published and never taken in before the
    topic's retention ended (the connector down that long, or a broker that lost what it held).
    Nothing will record its fate, and without this it kept its BSN, and its youth's whole case, for
    ever. Any of the youth's rows counts, whatever its topic or command: it may keep a signal a
    little longer, never purge one whose command can still go."""
    queued = exists().where(outbox.c.key == signals.c.youth_key)
    waiting = exists().where(parked.c.ladder == VERWIJSINDEX_GROUP, parked.c.key == signals.c.youth_key)
    return ~queued & ~waiting


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


async def _count(session: AsyncSession, table: Any, column: Any, values: list[str]) -> dict[str, int]:
    rows = await session.execute(
        select(column, func.count()).select_from(table).where(column.in_(values)).group_by(column)
    )
    return {key: int(n) for key, n in rows}


def commands_kept(inbox_keep_days: int | None) -> timedelta | None:
    """How long a signal command published and never taken in may still be on its topic, for `_lost`:
    the DLQ topic's term (30 days; the signal topic keeps 7), or longer when the brokers keep topics
    longer, which KETENHUB_KAFKA__INBOX_KEEP_DAYS says; None when that keeps everything (0): a
    command is then never taken for lost."""
    if inbox_keep_days == 0:
        return None
    return max(PARKED_TERM, timedelta(days=inbox_keep_days or 0))


async def purge(
    store: Store,
    settings: RetentionSettings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    kept: timedelta | None = PARKED_TERM,
) -> Purged:
    """One run: signals past their term, then cases, then audit entries; each chunk its own
    transaction, so a run that stops half way leaves whole cases and signals, kept or purged.
    `kept`: how long a command may still be on the signal topic (`commands_kept`), or a notification
    on its topic; None: for ever, and no record of a sent mail goes."""
    now = now or utcnow()
    out = Purged(dry_run=dry_run)
    total: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(chunk: dict[str, dict[str, int]]) -> None:
        for key, counts in chunk.items():
            for part, n in counts.items():
                total[key][part] += n

    before = local_day(now) - timedelta(days=settings.signal_days)
    letters_gone = now - PARKED_TERM
    lost_before = now - kept if kept is not None else None
    async with store.read() as session:
        ended = await _ended_signals(session, before, letters_gone, lost_before)
    # the signals this run purged (or, in a dry run, would): a case is idle without them. Not those
    # found first: one kept by the look under the write (a command queued since) keeps its case
    going: set[str] = set()
    for start in range(0, len(ended), CHUNK):
        counted: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        async with store.transaction() as session:
            # looked at again under the write: a command queued since keeps its signal
            among = [i for i, _ in ended[start : start + CHUNK]]
            part = await _ended_signals(session, before, letters_gone, lost_before, among)
            ids = [signal_id for signal_id, _ in part]
            if not ids:
                continue
            if dry_run:
                found = await _count(session, matches, matches.c.signal_id, ids)
                gone = part
            else:
                # what the deletes removed, not what was counted before them: a purge running at the
                # same time in another process may have removed it first (and audited it)
                found = Counter(
                    (
                        await session.execute(
                            delete(matches).where(matches.c.signal_id.in_(ids)).returning(matches.c.signal_id)
                        )
                    ).scalars()
                )
                gone = list(
                    await session.execute(
                        delete(signals)
                        .where(signals.c.signal_id.in_(ids))
                        .returning(signals.c.signal_id, signals.c.youth_key)
                    )
                )
            for signal_id, key in gone:
                going.add(signal_id)
                counted[key]["signals"] += 1
                counted[key]["matches"] += found.get(signal_id, 0)
            if not dry_run:
                await write_audits(session, _entries(now, counted))
        add(counted)
    cutoff = now - timedelta(days=settings.case_days)
    async with store.read() as session:
        cases = await _old_cases(session, cutoff, local_day(now), going)
    for candidates in _chunks(cases):
        counted = defaultdict(lambda: defaultdict(int))
        async with store.transaction() as session:
            # Looked at again under the write, holding the youths' case locks: a consent or handover
            # recorded since keeps the case, and one being recorded now waits for this purge, then
            # finds its referral gone. Each delete also takes only rows past their term themselves:
            # a referral taken in since (intake takes no case lock) or a consent withdrawn since is
            # kept, on PostgreSQL too, where another transaction commits between these statements.
            if not dry_run:  # a youth being written to now is not idle: left for the next run
                candidates = sorted(await try_lock_youths(session, candidates))
                if not candidates:
                    continue
            chunk = await _old_cases(session, cutoff, local_day(now), going, among=candidates)
            if not chunk:
                continue
            past = _past_term(cutoff, local_day(now))
            for name, table in (("handovers", handovers), ("consents", consents), ("referrals", referrals)):
                if dry_run:
                    found = Counter(await _count(session, table, table.c.youth_key, chunk))
                else:  # what the delete removed (see the signals above)
                    deleted = (
                        delete(table)
                        .where(table.c.youth_key.in_(chunk), past[name])
                        .returning(table.c.youth_key)
                    )
                    found = Counter((await session.execute(deleted)).scalars())
                for key, n in found.items():
                    counted[key][name] += n
            if not dry_run:
                await write_audits(session, _entries(now, counted))
        add(counted)
    audit_cutoff = now - timedelta(days=settings.audit_days)
    old = select(audit_log.c.id).where(audit_log.c.at < audit_cutoff).order_by(audit_log.c.id)
    while True:
        # Looked for outside the write: no index serves `at`, and the hub's first years find nothing
        # past the term after reading the whole log; on SQLite a write transaction held the only
        # writer's lock for that read, and intake, consumers and the relay waited on it.
        async with store.read() as session:
            ids = list(
                (
                    await session.execute(old.limit(AUDIT_CHUNK).offset(out.audit_entries if dry_run else 0))
                ).scalars()
            )
        if not ids:
            break
        if dry_run:
            out.audit_entries += len(ids)
            continue
        async with store.transaction() as session:
            taken = (
                await session.execute(
                    delete(audit_log).where(audit_log.c.id.in_(ids)).returning(audit_log.c.id)
                )
            ).scalars()
            ids = list(taken)  # another purge may have taken some first
            out.audit_entries += len(ids)
            if not ids:
                continue
            entry = audit_row(
                "retention.audit_purged",
                SYSTEM,
                at=now,
                system=SYSTEM,
                transaction_id=None,
                objects={"entries": len(ids), "before": audit_cutoff.isoformat()},
            )
            await write_audits(session, [entry])
    # An operator's reason for a dead-letter action is free text: kept as long as a case. A problem
    # resolved that long ago goes whole (an administrator's reason is free text too).
    if not dry_run:
        async with store.transaction() as session:
            await session.execute(
                update(dlq_actions)
                .where(
                    dlq_actions.c.at < now - timedelta(days=settings.case_days),
                    dlq_actions.c.reason.is_not(None),
                )
                .values(reason=None)
            )
            await session.execute(
                delete(mail_problems).where(
                    mail_problems.c.resolved_at < now - timedelta(days=settings.case_days)
                )
            )
            # Whose mailbox a mail reached (a caseworker's id) goes after a case's term too, and not
            # while its notification could still come again (a topic kept longer): its row is what
            # keeps a redelivered notification from being mailed twice.
            if kept is not None:
                sent_before = now - max(timedelta(days=settings.case_days), kept)
                await session.execute(delete(mail_sent).where(mail_sent.c.sent_at < sent_before))
    out.by_youth = {k: dict(v) for k, v in total.items()}
    out.youths = len(out.by_youth)
    for name in ("referrals", "consents", "handovers", "signals", "matches"):
        setattr(out, name, sum(v.get(name, 0) for v in out.by_youth.values()))
    return out


def _entries(now: datetime, by_youth: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One `retention.purged` entry per youth: what was removed of theirs, counted."""
    return [
        audit_row(
            "retention.purged",
            SYSTEM,
            at=now,
            system=SYSTEM,
            transaction_id=None,
            youth_key=key,
            objects={part: n for part, n in counts.items() if n},
        )
        for key, counts in by_youth.items()
    ]


def retention_loop(hub: Any) -> Callable[[], Awaitable[None]]:
    """A background task for `hub.background`: a purge at start, then every `interval_h` hours."""

    async def run() -> None:
        settings: RetentionSettings = hub.settings.retention
        while True:
            try:
                done = await purge(
                    hub.store, settings, kept=commands_kept(hub.settings.kafka.inbox_keep_days)
                )
                if done.youths or done.audit_entries:
                    log.info("retention purge", **done.as_json())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("retention purge failed; will retry next round", error=type(exc).__name__)
            await asyncio.sleep(settings.interval_h * 3600)

    return run


def register_retention(hub: Any) -> None:
    """Run the purge in the hub (with the operator console: the `api` component)."""
    hub.background["retention"] = retention_loop(hub)
