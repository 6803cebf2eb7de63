"""The inbox claim: a consumer group takes a batch's message ids before it handles them.

The ids are inserted at the start of the batch's transaction, and only the ones that were not there
yet are handled. Read first and inserted at the end, they were not claimed at all: when a rebalance
gave a partition to a second process while the first was in the middle of a batch, both handled the
same records, and the one that committed second failed on the inbox's primary key, taking the rest
of its batch with it.

PostgreSQL: an insert of an id that another open transaction inserted waits for that transaction;
when it commits, ON CONFLICT DO NOTHING skips the id and RETURNING leaves it out; when it rolls back,
the id is this transaction's. The ids go in sorted, so two claims that overlap take their ids in
one order and never wait for each other both.

SQLite: a writing transaction holds the database's one write lock from its BEGIN IMMEDIATE
(`Store.transaction`), so no other claim runs beside this one; the same statement makes it one code
path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from hub.store.tables import inbox
from schemas.envelope import utcnow

_PROCESSED_AT = bindparam("now", type_=inbox.c.processed_at.type)  # stored as every other timestamp
_CLAIM_PG = text(
    "INSERT INTO inbox (consumer, message_id, processed_at)"
    " SELECT CAST(:consumer AS varchar), id, CAST(:now AS timestamptz)"
    " FROM unnest(CAST(:ids AS varchar[])) WITH ORDINALITY AS claimed(id, n) ORDER BY n"
    " ON CONFLICT DO NOTHING RETURNING message_id"
).bindparams(_PROCESSED_AT)
# SQLite reads `FROM json_each(...) ON` as a join without its WHERE (the documented ambiguity)
_CLAIM_SQLITE = text(
    "INSERT INTO inbox (consumer, message_id, processed_at)"
    " SELECT :consumer, value, :now FROM json_each(:ids) WHERE true"
    " ON CONFLICT DO NOTHING RETURNING message_id"
).bindparams(_PROCESSED_AT)


async def claim(session: AsyncSession, consumer: str, message_ids: Iterable[str]) -> set[str]:
    """Of `message_ids`, those `consumer` had not processed: inserted into its inbox in this
    transaction (they leave it again if it rolls back). An id another transaction holds is waited
    for (PostgreSQL), then left out if that transaction committed it."""
    ids = sorted(set(message_ids))
    if not ids:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        statement, values = _CLAIM_PG, {"consumer": consumer, "ids": ids, "now": utcnow()}
    else:
        statement, values = _CLAIM_SQLITE, {"consumer": consumer, "ids": json.dumps(ids), "now": utcnow()}
    return set((await session.execute(statement, values)).scalars())
