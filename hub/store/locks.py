"""A youth's case lock: PostgreSQL advisory locks, held until the transaction ends.

Taken by what must see a youth's case whole while it writes (SQLite's write transactions run one at
a time, so there it takes nothing):
- intake's rule 5 counts a youth's earlier truancy referrals before accepting a "first" one;
- the retention purge checks that a case is idle before deleting it;
- recording a consent, asking for a handover and registering a signal: with the lock, either they
  commit first and the purge finds the case busy, or they wait for the purge (a consent or handover
  then finds the referral gone) rather than leave a row pointing at a purged case; and whether their
  caseworker works on the case (`may_see_case`) is asked under it, so two caseworkers' first
  requests on a youth at once do not both find nobody on it;
- withdrawing a consent, before the consent's row: two withdrawals of a youth's consents at once
  take turns, and the second sees the handovers the first withdrew.

Keys are taken in ascending order by every holder, all at once (`lock_youths` sorts them), so two
transactions each waiting for the other's youth cannot happen: a Kafka batch of routing or delivery
takes all its youths' locks before its first record (hub.handovers.batches), not one a record. A
holder takes them before any other lock of the youth's case (a row, a signal's advisory lock): so
does routing, whose batch may route one youth's handover, then create another's. The purge does not
wait: it takes the locks it can get (`try_lock_youths`) and leaves a youth being written to for its
next run.

A lock covers a bucket of youths (one of `BUCKETS`, by the youth key), not one youth: PostgreSQL
keeps advisory locks in a shared table of a few thousand entries (`max_locks_per_transaction` per
connection), and a leerplicht upload of ten thousand truancy rows, one lock a youth, ran it out
("out of shared memory", for every session of the server). Two youths in one bucket only wait for
each other now and then; no transaction holds more than `BUCKETS` of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_TRY_LOCK_YOUTHS = text(
    "SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k WHERE pg_try_advisory_xact_lock(k)"
)
_LOCK_YOUTHS = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM"
    " (SELECT k FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS ordered"
)


async def lock_youths(session: AsyncSession, youth_keys: Iterable[str]) -> bool:
    """Hold each youth's case lock until the transaction ends; True when locks were taken
    (PostgreSQL), False where the store needs none (SQLite) or no key was given."""
    keys = sorted({lock_key(k) for k in youth_keys})
    if not keys or session.get_bind().dialect.name != "postgresql":
        return False
    await session.execute(_LOCK_YOUTHS, {"keys": keys})
    return True


BUCKETS = 1024
# The first key of the buckets' range: apart from the hub's other one-bigint advisory locks (the
# relay's, the migration's: 7,301,001 and on).
_FIRST = 0x6B68_0000_0000


def lock_key(youth_key: str) -> int:
    """The lock of the youth's bucket (a youth key is 64 hex digits, uniformly spread)."""
    return _FIRST + int(youth_key[:15], 16) % BUCKETS


async def try_lock_youths(session: AsyncSession, youth_keys: Iterable[str]) -> set[str]:
    """Of `youth_keys`, those whose case lock this transaction holds now (until it ends), without
    waiting for any: a youth another transaction is writing to is left out. All of them where the
    store needs no locks (SQLite)."""
    wanted = set(youth_keys)
    if not wanted or session.get_bind().dialect.name != "postgresql":
        return wanted
    got = set(
        (await session.execute(_TRY_LOCK_YOUTHS, {"keys": sorted({lock_key(k) for k in wanted})})).scalars()
    )
    return {k for k in wanted if lock_key(k) in got}
