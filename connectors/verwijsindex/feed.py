"""The match feed poller: `GET /api/v1/matches?vanaf=<cursor>`, each match once on verwijsindex.match.v1.

Every page is handled in one store transaction: the match rows (unique match id), their outbox
messages and the new cursor commit together, so a crash re-reads the page and publishes nothing
twice. On PostgreSQL a transaction-scoped advisory lock lets only one poller of all hub processes
work at a time; the others find the lock taken and skip that round. On SQLite a write transaction
holds the whole database, so the index is asked before it begins; the page is taken only when the
cursor is still the one it was asked after (a concurrent poll may have moved it on meanwhile).

The cursor is the index's own: the feed keeps which index it was handed out by (`index`, its
address), and one pointed at another index (the real one, after the simulator) starts at that one's
beginning rather than sending it a cursor it refuses at every poll; the matches already stored are
known by their id.

A cursor kept before the feed kept its index (an earlier version's) is taken as the configured
index's; when that index refuses it (a 4xx), the feed starts at its beginning once, rather than
asking with it for ever.

A poll that fails waits before the next: the poll interval, doubled with each failure in a row up to
`MAX_BACKOFF_S`, and at least as long as the index's Retry-After (up to an hour).

An entry that breaks the contract is skipped, so that it cannot hold up the matches after it: it
is logged (position and failed fields only, never a value), counted as outcome "refused" of the
match topic, and recorded as a problem for an administrator. A page whose cursor breaks the
contract is refused whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from connectors.verwijsindex.client import Refused, RefusedMatch, VerwijsindexClient
from connectors.verwijsindex.contract import Match
from connectors.verwijsindex.mapping import canonical_match
from hub.logging import get_logger
from hub.metrics import Metrics
from hub.signals.matches import (
    FEED_INDEX,
    read_cursor,
    record_match,
    record_refused_match,
    write_cursor,
)
from hub.spine.dlq import safe_error_message
from hub.store import Store
from schemas.envelope import utcnow
from schemas.match import Match as CanonicalMatch

log = get_logger(__name__)
FEED_LOCK = 7_305_001  # PostgreSQL advisory lock id of the match feed poller
MAX_BACKOFF_S = 300.0  # the longest wait after failed polls (a Retry-After may ask for longer)
MAX_RETRY_AFTER_S = 3600.0  # the longest Retry-After waited out (a vendor's bug, a clock far off)
EMBEDDED = "the embedded simulator"


def index_of(url: str | None, organisatie: str | None = None) -> str:
    """Which feed a cursor is of, as kept beside it: the index's address without a login, a query or
    a trailing slash, and the organisation whose matches it reads, hashed (an address may be longer
    than a cursor is kept); the in-process simulator is one index however its port changes (it knows
    its own earlier cursors)."""
    address = EMBEDDED if url is None else url.split("://", 1)[-1].split("@", 1)[-1].split("?", 1)[0]
    feed = f"{address.rstrip('/').lower()} {organisatie or ''}"
    return "sha256:" + hashlib.sha256(feed.encode()).hexdigest()


class MatchFeed:
    """Polls the feed until cancelled; `poll_once()` handles one page."""

    def __init__(
        self,
        store: Store,
        client: VerwijsindexClient,
        *,
        topic: str,
        interval_s: float,
        page_size: int = 100,
        on_published: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        index: str = index_of(None),
    ) -> None:
        self.store, self.client, self.topic, self.index = store, client, topic, index
        self._told_other_index = False
        self._index_unknown = False  # the stored cursor has no index beside it (an earlier version's)
        self._unknown_refused = False  # and the index refused it: the feed starts at its beginning
        self.interval_s, self.page_size, self.on_published = interval_s, page_size, on_published
        self.metrics = metrics
        self.last_error: str | None = None  # None again once a poll succeeds
        self.last_error_at: datetime | None = None
        self.last_success: datetime | None = None
        self.published = 0
        self.moved = False  # whether the last page moved the cursor on
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Poll now (a webhook from the index could call this)."""
        self._wake.set()

    async def _cursor(self, session: AsyncSession | AsyncConnection) -> str | None:
        """The stored cursor when the index that handed it out is this feed's, or is not known (kept by
        an earlier version: of the index configured); None, the beginning, for another index's."""
        kept = await read_cursor(session, FEED_INDEX)
        if kept is not None and kept != self.index:
            if not self._told_other_index:
                self._told_other_index = True
                log.warning(
                    "the match feed reads another Verwijsindex than before: it starts at that "
                    "index's beginning (the matches stored already are not passed on again)"
                )
            return None
        self._index_unknown = kept is None
        return None if self._index_unknown and self._unknown_refused else await read_cursor(session)

    async def _page(
        self, cursor: str | None, transaction_id: str
    ) -> tuple[str | None, list[Match | RefusedMatch], str]:
        """(the cursor asked after, the page, the cursor after it): a cursor of an unknown index that
        the index refuses is not asked after again; the index is asked from its beginning instead."""
        try:
            return cursor, *await self.client.matches(cursor, self.page_size, transaction_id)
        except Refused as exc:
            if cursor is None or not self._index_unknown or self._unknown_refused:
                raise
            self._unknown_refused = True
            log.warning(
                "the Verwijsindex refuses the feed's cursor, kept before the hub kept which index "
                "handed it out: the feed starts at the index's beginning (the matches stored already "
                "are not passed on again)",
                status=exc.status,
            )
            return None, *await self.client.matches(None, self.page_size, transaction_id)

    async def poll_once(self) -> int:
        """Handle one page after the stored cursor; return how many feed entries it held."""
        transaction_id = str(uuid.uuid4())
        if self.store.dialect == "postgresql":
            async with self.store.transaction() as session:
                got = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": FEED_LOCK})
                if not got.scalar():
                    return 0
                cursor, page, volgende = await self._page(await self._cursor(session), transaction_id)
                new, refused = await self._take(session, cursor, page, volgende, transaction_id)
        else:
            async with self.store.connect() as conn:
                cursor = await self._cursor(conn)
            cursor, page, volgende = await self._page(cursor, transaction_id)
            if not page and volgende == cursor:
                self.moved = False
                return 0  # nothing new: the usual quiet poll takes no write transaction at all
            async with self.store.transaction() as session:
                if await self._cursor(session) != cursor:
                    return 0  # another poll took this page meanwhile
                new, refused = await self._take(session, cursor, page, volgende, transaction_id)
        for skipped in refused:
            log.warning(
                "match feed entry breaks the contract; skipped",
                position=skipped.position,
                problems=list(skipped.problems),
                transaction_id=transaction_id,
            )
        if refused and self.metrics is not None:
            self.metrics.messages.labels(self.topic, "refused").inc(len(refused))
        if new:
            self.published += new
            self.on_published()
        return len(page) if page else 0

    async def _take(
        self,
        session: AsyncSession,
        cursor: str | None,
        page: list[Match | RefusedMatch],
        volgende: str,
        transaction_id: str,
    ) -> tuple[int, list[RefusedMatch]]:
        """Record a page's matches (and its refused entries) and the cursor after it."""
        new = 0
        refused: list[RefusedMatch] = []
        for position, entry in enumerate(page):
            match = _canonical(position, entry)
            if isinstance(match, RefusedMatch):
                refused.append(match)
                await _record_refused(session, match, transaction_id)
            else:
                new += await record_match(session, self.topic, match, transaction_id)
        self.moved = volgende != cursor
        if self.moved:
            await write_cursor(session, volgende)
            await write_cursor(session, self.index, FEED_INDEX)  # whose cursor it is
        return new, refused

    async def run(self) -> None:
        """Poll until cancelled; a full page that moved the cursor on is followed at once (one that
        did not would be asked for again and again); errors back off to the interval."""
        failures = 0
        while True:
            try:
                seen = await self.poll_once()
                self.last_error, self.last_success, failures = None, utcnow(), 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                wait = self.backoff(exc, failures)
                self.last_error, self.last_error_at = safe_error_message(exc), utcnow()
                log.warning("match feed poll failed; will retry", error=self.last_error, retry_in_s=wait)
                await asyncio.sleep(wait)  # the whole wait: a wake does not cut it short
                continue
            if seen >= self.page_size and self.moved:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    def backoff(self, exc: BaseException, failures: int) -> float:
        """How long to wait after the `failures`th failed poll in a row."""
        doubled = self.interval_s * float(2 ** min(failures - 1, 20))
        wait = min(doubled, max(MAX_BACKOFF_S, self.interval_s))
        asked: float = min(getattr(exc, "retry_after", None) or 0.0, MAX_RETRY_AFTER_S)
        return max(wait, asked)


def _canonical(position: int, entry: Match | RefusedMatch) -> CanonicalMatch | RefusedMatch:
    if isinstance(entry, RefusedMatch):
        return entry
    try:
        return canonical_match(entry)
    except ValidationError as exc:
        return RefusedMatch.of(position, entry.match_id, entry.signaal_id, exc)


async def _record_refused(session: AsyncSession, entry: RefusedMatch, transaction_id: str) -> None:
    reason = "; ".join(entry.problems)
    await record_refused_match(
        session,
        match_id=entry.match_id,
        signal_id=entry.signal_id,
        reason=f"match uit de Verwijsindex overgeslagen (positie {entry.position} op de pagina): {reason}",
        transaction_id=transaction_id,
    )
