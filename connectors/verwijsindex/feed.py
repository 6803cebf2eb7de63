"""The match feed poller: `GET /api/v1/matches?vanaf=<cursor>`, each match once on verwijsindex.match.v1.

Every page is handled in one store transaction: the match rows (unique match id), their outbox
messages and the new cursor commit together, so a crash re-reads the page and publishes nothing
twice. On PostgreSQL a transaction-scoped advisory lock lets only one poller of all hub processes
work at a time; the others find the lock taken and skip that round.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

from sqlalchemy import text

from connectors.verwijsindex.client import VerwijsindexClient
from connectors.verwijsindex.mapping import canonical_match
from hub.logging import get_logger
from hub.signals.matches import read_cursor, record_match, write_cursor
from hub.spine.dlq import safe_error_message
from hub.store import Store

log = get_logger(__name__)
FEED_LOCK = 7_305_001  # PostgreSQL advisory lock id of the match feed poller


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
    ) -> None:
        self.store, self.client, self.topic = store, client, topic
        self.interval_s, self.page_size, self.on_published = interval_s, page_size, on_published
        self.last_error: str | None = None
        self.published = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Poll now (a webhook from the index could call this)."""
        self._wake.set()

    async def poll_once(self) -> int:
        """Handle one page after the stored cursor; return how many feed entries it held."""
        transaction_id = str(uuid.uuid4())
        async with self.store.transaction() as session:
            if self.store.dialect == "postgresql":
                got = await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": FEED_LOCK})
                if not got.scalar():
                    return 0
            cursor = await read_cursor(session)
            page, volgende = await self.client.matches(cursor, self.page_size, transaction_id)
            new = 0
            for entry in page:
                new += await record_match(session, self.topic, canonical_match(entry), transaction_id)
            if volgende != cursor:
                await write_cursor(session, volgende)
        if new:
            self.published += new
            self.on_published()
        return len(page) if page else 0

    async def run(self) -> None:
        """Poll until cancelled; a full page is followed at once, errors back off to the interval."""
        while True:
            try:
                seen = await self.poll_once()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = safe_error_message(exc)
                log.warning("match feed poll failed; will retry", error=self.last_error)
                seen = 0
            if seen >= self.page_size:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
