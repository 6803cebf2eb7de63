"""The pseudonymisation secret's fingerprint in the store: a hub or command with another secret is refused.

Every youth key is HMAC(secret, BSN). With another secret than the hub's, a command finds none of a
youth's data (a subject-access export says "we hold nothing") and a hub files new data under keys
nobody finds again. The first `ketenhub run` on a database records HMAC(secret, a fixed text): it
tells one secret from another without holding it, and the secret cannot be had back from it. A store
without one (migrated, never started by a hub since) checks nothing: only a hub's start records it,
so a command run with a wrong secret cannot lock the hub out.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select

from hub.errors import ConfigError
from hub.store import Store
from hub.store.tables import secret_fingerprint
from schemas.envelope import utcnow

_FIXED = b"ketenhub: the fingerprint of the pseudonymisation secret, v1"
_ROW = 1


class WrongSecret(ConfigError):
    """The secret is not the one the hub first started with on this database."""


def fingerprint(secret: str) -> str:
    """HMAC-SHA256 of a fixed text under `secret`, hex: the same secret gives the same fingerprint."""
    return hmac.new(secret.encode(), _FIXED, hashlib.sha256).hexdigest()


async def _recorded(store: Store) -> str | None:
    async with store.read() as session:
        query = select(secret_fingerprint.c.fingerprint).where(secret_fingerprint.c.id == _ROW)
        return (await session.execute(query)).scalar_one_or_none()


async def check_secret(store: Store, secret: str, *, source: str, record: bool = False) -> bool:
    """WrongSecret when the store holds the fingerprint of another secret; with `record` (a hub's start)
    the fingerprint is written when there is none. True when there was one to check against.

    `source` names where the secret came from (KETENHUB_SECRET, or the state dir's file), for the
    message."""
    mine = fingerprint(secret)
    known = await _recorded(store)
    if known is None and record:
        try:
            async with store.transaction() as session:
                await session.execute(
                    insert(secret_fingerprint).values(id=_ROW, fingerprint=mine, recorded_at=utcnow())
                )
            return False
        except sa_exc.IntegrityError:  # another process of the hub recorded it at the same moment
            known = await _recorded(store)
    if known is not None and not hmac.compare_digest(known, mine):
        raise WrongSecret(
            f"{source}: not the secret the hub first started with on {store.describe()} (its"
            " fingerprint there differs): youth keys made with it find nothing the hub holds; set"
            " KETENHUB_SECRET to the hub's secret, or KETENHUB_STATE_DIR to the directory of the hub's"
            " ketenhub.secret"
        )
    return known is not None
