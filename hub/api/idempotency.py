"""`Idempotency-Key` on the caseworker POSTs that create something: a signal, a handover, a zorgmelding.

A client whose POST timed out cannot tell whether it got through. Sent again without a key, it makes
a second signal (a second registration in the Verwijsindex, matched against the first) or a second
handover. With the same `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header) it gets what
the first request made instead:

- the same key with the same request: the resource as it is now, with the first answer's status and
  `Idempotent-Replayed: true`; the read is audited as any read of it (rule 18); looked up before the
  request is checked again, and 409 naming it when the caseworker may no longer see it;
- the same key with another request: 422, nothing done;
- two requests with one key at once: one makes the resource, the other answers with it.

A key is remembered for `KEEP` per caseworker and endpoint, with the id of what it made and a keyed
hash of the request, never the request itself (it holds a BSN). Key and resource are written in one
transaction: both are kept, or neither. Without the header a POST works as before.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

from fastapi import Header, Response
from sqlalchemy import Column, String, Table, delete, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.problems import Problem
from hub.store import Store
from hub.store.tables import metadata
from hub.store.types import UtcDateTime

KEEP = timedelta(hours=24)
HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
T = TypeVar("T")

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(200), primary_key=True),  # the caseworker and the endpoint
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),  # HMAC-SHA256 of the request, hex
    Column("resource_id", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False, index=True),
)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Optional. A unique value per request (a UUID); sent again with a request that "
        "timed out, it answers with what the first one made instead of making a second.",
    ),
]


@dataclass(frozen=True)
class Claim:
    """One request's key: whose, for which endpoint, what was asked, and when (the hub's clock)."""

    scope: str
    key: str
    fingerprint: str
    at: datetime


def claim_of(
    key: str | None, *, user: str, endpoint: str, request: bytes, secret: str, at: datetime
) -> Claim | None:
    """The request's claim on `key`; None without a key."""
    if key is None:
        return None
    fingerprint = hmac.new(secret.encode(), request, hashlib.sha256).hexdigest()
    return Claim(scope=f"{user}:{endpoint}"[:200], key=key, fingerprint=fingerprint, at=at)


async def replay_earlier(
    store: Store,
    claim: Claim | None,
    response: Response,
    replay: Callable[[AsyncSession, str], Awaitable[T]],
) -> T | None:
    """What an earlier request with the claim's key made, answered by `replay`; None when there is
    none. Looked up before the request is checked again: a retry gets what the first one made also
    when the checks would now answer otherwise (the caseworker's rights changed, a day passed)."""
    if claim is None:
        return None
    async with store.read() as session:  # most keys are new: no write lock (SQLite's only) for them
        earlier = await _earlier(session, claim)
    if earlier is None:
        return None
    async with store.transaction() as session:  # a replay is an audited read: it writes
        response.headers[REPLAYED] = "true"
        return await _replayed(session, replay, earlier)


async def create_once(
    store: Store,
    claim: Claim | None,
    response: Response,
    create: Callable[[AsyncSession], Awaitable[tuple[str, T]]],
    replay: Callable[[AsyncSession, str], Awaitable[T]],
) -> T:
    """Run `create` (which answers the new resource's id and the answer) in a transaction, once per
    claim; a repeat of the claim gets `replay(session, resource_id)` of what the first one made."""
    if claim is None:
        async with store.transaction() as session:
            _, made = await create(session)
        return made
    for _ in range(2):
        try:
            async with store.transaction() as session:
                earlier = await _earlier(session, claim)
                if earlier is not None:
                    response.headers[REPLAYED] = "true"
                    return await _replayed(session, replay, earlier)
                resource_id, made = await create(session)
                await _remember(session, claim, resource_id)
            return made
        except _Taken:  # rolled back, nothing of this one kept: the next turn answers with the other's
            continue
    raise Problem(
        409,
        "Verzoek al in behandeling",
        f"Een verzoek met deze {HEADER} is nog bezig; probeer het zo opnieuw.",
    )


async def _replayed(
    session: AsyncSession, replay: Callable[[AsyncSession, str], Awaitable[T]], resource_id: str
) -> T:
    """`replay`; when the caller may no longer see what the first request made (it moved to another
    caseworker), 409 naming it, so that the client knows it was made and does not ask again."""
    try:
        return await replay(session, resource_id)
    except Problem as exc:
        if exc.status not in (403, 404):
            raise
        raise Problem(
            409,
            "Verzoek al verwerkt",
            f"Dit verzoek is al verwerkt en maakte {resource_id}; u kunt dat nu niet meer inzien.",
        ) from None


class _Taken(Exception):
    """A request beside this one, with the same key, was committed first."""


async def _remember(session: AsyncSession, claim: Claim, resource_id: str) -> None:
    """Keep the key with what it made; forget keys past their term. On PostgreSQL the insert waits
    for a request beside it with the same key, and fails when that one commits."""
    now = claim.at
    await session.execute(delete(idempotency_keys).where(idempotency_keys.c.created_at < now - KEEP))
    row = {
        "scope": claim.scope,
        "key": claim.key,
        "fingerprint": claim.fingerprint,
        "resource_id": resource_id,
        "created_at": now,
    }
    try:
        async with session.begin_nested():
            await session.execute(insert(idempotency_keys).values(**row))
    except sa_exc.IntegrityError:
        raise _Taken from None


async def _earlier(session: AsyncSession, claim: Claim) -> str | None:
    """The resource an earlier request with this key made; 422 when that request was another."""
    row = (
        await session.execute(
            select(idempotency_keys.c.fingerprint, idempotency_keys.c.resource_id).where(
                idempotency_keys.c.scope == claim.scope,
                idempotency_keys.c.key == claim.key,
                idempotency_keys.c.created_at >= claim.at - KEEP,
            )
        )
    ).first()
    if row is None:
        return None
    if not hmac.compare_digest(row.fingerprint, claim.fingerprint):
        raise Problem(
            422,
            f"{HEADER} al gebruikt",
            f"Deze {HEADER} hoort bij een ander verzoek. Gebruik voor elk nieuw verzoek een nieuwe sleutel.",
        )
    return str(row.resource_id)
