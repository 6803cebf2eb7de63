"""Signals the hub holds, for tests that put their commands on the topic themselves."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert

from hub.signals.service import new_signal_row
from hub.signals.tables import signals
from hub.store import Store
from schemas.pseudonym import youth_key
from schemas.signal import VerwijsindexSignal
from tests.conftest import TEST_SECRET


async def hold_signals(db_url: str, batch: Iterable[VerwijsindexSignal]) -> None:
    """Store `batch` as the caseworker API does, without queuing their commands: the Verwijsindex
    connector sends a command only for a signal the hub holds."""
    rows = [new_signal_row(s, youth_key(TEST_SECRET, s.youth.bsn)) for s in batch]
    store = Store(db_url)
    try:
        await store.migrate()
        async with store.transaction() as session:
            await session.execute(insert(signals), rows)
    finally:
        await store.close()
