"""Delivery status of signal commands, kept on the signal row by the retry ladder's hooks.

A signal shows the state of its latest command (the row's `delivery_message_id`): queued,
delivered, retrying (attempt n, next try at) or dead_lettered (why). An earlier command that gets
through while a later one waits leaves the signal `queued`; one that gets through, is parked or is
dead-lettered after the later one was settled (an earlier command replayed from the dead-letter
topic) leaves its state as it is; while the later one waits behind it, the signal shows the earlier
one's retries, and a command waiting behind another youth's parked command shows `retrying` with
attempt 0. Only the latest command dead-lettered makes the signal `dead_lettered`.

A contact change the index had no signal for while a registration of it was on its way (parked,
or a dead letter not replayed yet) needed no call, but the signal is not in the index: it shows its
registration `dead_lettered` (`UNREGISTERED` says why), and whichever registration of it is then
delivered, parked or dead-lettered shows as the latest command.

A registration the index had taken at an earlier attempt, whose answer was lost, is audited as the
disclosure it was, with whose contact the index held when the attempt found it there.

A registration or contact change the connector withheld (the signal is over: withdrawn, or past its
end date) shows `withheld` when it is the latest command, or, for a registration, when the signal
awaited one: nothing was sent, and nothing is left to send. A withdrawal behind it shows as the
latest command once it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, audit_row, write_audit, write_audits
from hub.signals import commands
from hub.signals.tables import signals
from hub.store.tables import audit_log
from schemas._base import as_code
from schemas.envelope import Envelope, utcnow

CONNECTOR = "verwijsindex-connector"
WAITING = "waiting behind an earlier command for the same youth"
# What a command that was no plain disclosure came to (the audit action's suffix):
WITHHELD = "withheld"  # the hub withdrew the signal before this command went: nothing was sent
NOT_IN_INDEX = "not_in_index"  # a withdrawal or contact change the index had no signal for
UNREGISTERED = (
    "the Verwijsindex holds no such signal: its registration has not reached it (a dead letter to "
    "replay, or waiting on the retry ladder); the contact change needs no call, the registration "
    "names the contact the hub holds then"
)
# The latest command's fate, which an earlier one getting through (a replayed dead letter) leaves be.
_SETTLED = ("delivered", "withheld", "dead_lettered")


def _where(message: Envelope):  # type: ignore[no-untyped-def]
    return signals.c.signal_id == (commands.signal_id_of(message) or "")


def _action(message: Envelope, outcome: str | None) -> str:
    """The audit action: the command, or, when it was no plain disclosure, what became of it."""
    return _action_of(message.type, outcome)


def _action_of(command: str, outcome: str | None = None) -> str:
    return f"verwijsindex.{command}" + (f".{outcome}" if outcome else "")


def _unregistered(message: Envelope, outcome: str | None) -> bool:
    """A contact change the index had no signal for."""
    return message.type == commands.CHANGE_CONTACT and outcome == NOT_IN_INDEX


def _awaiting_registration() -> Any:
    """A signal whose registration, whichever, is awaited (`UNREGISTERED`)."""
    return signals.c.delivery_message_id.is_(None) & (signals.c.delivery_command == commands.REGISTER)


def _latest(message: Envelope) -> Any:
    """The signal's latest command is `message`: its row names it, or names none (a row kept before
    rows named their commands); for a registration, also when the signal awaits whichever
    registration of it."""
    c = signals.c
    latest = (c.delivery_message_id == message.message_id) | (
        c.delivery_message_id.is_(None) & c.delivery_command.is_(None)
    )
    if message.type == commands.REGISTER:
        latest = latest | _awaiting_registration()
    return latest


def _objects(
    message: Envelope, signal_id: str | None, contact: str | None, earlier: str | None = None
) -> dict[str, Any]:
    """The audit entry's objects; for a contact sent, whose it was (the signal's contact when it went),
    and whose the command was queued with when that was someone else. For a registration the index
    had taken at an earlier attempt (`earlier` not None): that it had, and whose contact the index
    held when this attempt found it (before giving it the contact now); None when it was neither the
    queued nor the current contact. That earlier attempt disclosed the signal with the contact then."""
    objects: dict[str, Any] = {
        "signal_id": signal_id,
        "message_id": message.message_id,
        "partner": "verwijsindex",
    }
    if contact:
        objects["caseworker_id"] = contact
        queued = as_code(message.payload.get("caseworker_id")) if message.payload else None
        if queued is not None and queued != contact:
            objects["queued_caseworker_id"] = queued
    if earlier is not None:
        objects["registered_at_earlier_attempt"] = True
        objects["index_contact_caseworker_id"] = earlier or None
    return objects


async def on_delivered(
    session: AsyncSession,
    message: Envelope,
    *,
    outcome: str | None = None,
    contact: str | None = None,
    earlier: str | None = None,
) -> None:
    """The index accepted the command (or it needed no call, `outcome` says why): mark it, and audit
    it (rule 18), with `contact`: the caseworker whose contact details it sent, and `earlier`, for a
    registration the index had taken at an earlier attempt, whose contact it held (see `_objects`)."""
    now = utcnow()
    latest = signals.c.delivery_message_id == message.message_id
    if message.type == commands.REGISTER and outcome in (None, WITHHELD):
        latest = latest | _awaiting_registration()
    if _unregistered(message, outcome):
        values = _unregistered_values(now)
    else:
        values = _WITHHELD_VALUES if outcome == WITHHELD else _delivered_values(now)
    await session.execute(update(signals).where(_where(message), latest).values(**values))
    await session.execute(
        update(signals)
        .where(_where(message), ~latest, signals.c.delivery_state.not_in(_SETTLED))
        .values(delivery_state="queued", attempt=0, next_try_at=None, last_error=None)
    )
    signal_id = commands.signal_id_of(message)
    entry = AuditEntry(
        action=_action(message, outcome),
        user=CONNECTOR,
        youth_key=await _youth_key(session, signal_id),
        objects=_objects(message, signal_id, contact, earlier),
    )
    await write_audit(session, entry, transaction_id=message.transaction_id, system=CONNECTOR)


async def registration_recorded(session: AsyncSession, signal_id: str, youth_key: str) -> bool:
    """Whether a registration of the signal is recorded as a disclosure to the index (its audit entry:
    delivered, or found there at a later attempt)."""
    found = await session.execute(
        select(audit_log.c.objects).where(
            audit_log.c.youth_key == youth_key, audit_log.c.action == _action_of(commands.REGISTER)
        )
    )
    return any((row.objects or {}).get("signal_id") == signal_id for row in found)


def _delivered_values(now: datetime) -> dict[str, Any]:
    return {
        "delivery_state": "delivered",
        "attempt": 0,
        "next_try_at": None,
        "last_error": None,
        "delivered_at": now,
    }


# Nothing was sent, nothing is left to send: not `delivered` (no delivered_at), not waiting.
_WITHHELD_VALUES: dict[str, Any] = {
    "delivery_state": "withheld",
    "attempt": 0,
    "next_try_at": None,
    "last_error": None,
}


def _unregistered_values(now: datetime) -> dict[str, Any]:
    """The signal's registration is awaited: a dead letter, as far as the hub can tell. `updated_at`
    as `on_dead` sets it: retention keeps the signal while that letter can still be replayed."""
    return {
        "delivery_state": "dead_lettered",
        "delivery_command": commands.REGISTER,
        "delivery_message_id": None,
        "attempt": 0,
        "next_try_at": None,
        "last_error": UNREGISTERED,
        "updated_at": now,
    }


async def on_delivered_many(
    session: AsyncSession,
    messages: Sequence[Envelope],
    *,
    outcome_of: Callable[[str], str | None] = lambda _: None,
    contact_of: Callable[[str], str | None] = lambda _: None,
    earlier_of: Callable[[str], str | None] = lambda _: None,
) -> None:
    """`on_delivered` for a round of deliveries (at most one per youth), in four statements (one more
    with a contact change the index had no signal for, one more with a command withheld);
    `outcome_of(message_id)`, `contact_of(message_id)` and `earlier_of(message_id)` are each one's
    `outcome`, `contact` and `earlier`."""
    now = utcnow()
    ids = [m.message_id for m in messages]
    signal_ids = {m.message_id: commands.signal_id_of(m) or "" for m in messages}
    touched = signals.c.signal_id.in_(set(signal_ids.values()))
    unregistered = [m.message_id for m in messages if _unregistered(m, outcome_of(m.message_id))]
    withheld = [m.message_id for m in messages if outcome_of(m.message_id) == WITHHELD]
    registrations = [m for m in messages if m.type == commands.REGISTER]
    registered = {signal_ids[m.message_id] for m in registrations if not outcome_of(m.message_id)}
    withheld_registrations = {signal_ids[m.message_id] for m in registrations if m.message_id in withheld}
    # a signal whose latest command got through is delivered; one with a later command waiting, queued
    await session.execute(
        update(signals)
        .where(touched, signals.c.delivery_message_id.not_in(ids), signals.c.delivery_state.not_in(_SETTLED))
        .values(delivery_state="queued", attempt=0, next_try_at=None, last_error=None)
    )
    got_through = [i for i in ids if i not in set(unregistered) | set(withheld)]
    await session.execute(
        update(signals)
        .where(
            touched,
            signals.c.delivery_message_id.in_(got_through)
            | (_awaiting_registration() & signals.c.signal_id.in_(registered)),
        )
        .values(**_delivered_values(now))
    )
    if unregistered:
        await session.execute(
            update(signals)
            .where(touched, signals.c.delivery_message_id.in_(unregistered))
            .values(**_unregistered_values(now))
        )
    if withheld:
        await session.execute(
            update(signals)
            .where(
                touched,
                signals.c.delivery_message_id.in_(withheld)
                | (_awaiting_registration() & signals.c.signal_id.in_(withheld_registrations)),
            )
            .values(**_WITHHELD_VALUES)
        )
    found = await session.execute(select(signals.c.signal_id, signals.c.youth_key).where(touched))
    keys: dict[str, str] = {row.signal_id: row.youth_key for row in found}
    rows = [
        audit_row(
            _action(m, outcome_of(m.message_id)),
            CONNECTOR,
            at=now,
            system=CONNECTOR,
            transaction_id=m.transaction_id,
            youth_key=keys.get(signal_ids[m.message_id]),
            objects=_objects(
                m, signal_ids[m.message_id] or None, contact_of(m.message_id), earlier_of(m.message_id)
            ),
        )
        for m in messages
    ]
    await write_audits(session, rows)  # rule 18, as write_audit does one by one


async def on_parked(
    session: AsyncSession, message: Envelope, attempt: int, due_at: datetime, error: str | None
) -> None:
    """The command waits for its next attempt: shown when it is the signal's latest command, or an
    earlier one the latest waits behind (not when the latest was settled: a replayed dead letter)."""
    query = update(signals).where(
        _where(message), _latest(message) | signals.c.delivery_state.not_in(_SETTLED)
    )
    if attempt == 0 and error is None:  # parked behind another command: keep a retrying head's
        query = query.where(signals.c.delivery_state != "retrying")  # details (a put-off has an error)
    await session.execute(
        query.values(
            delivery_state="retrying", attempt=attempt, next_try_at=due_at, last_error=error or WAITING
        )
    )


async def on_dead(session: AsyncSession, message: Envelope, error: str) -> None:
    """The command went to the dead-letter topic; operators can replay it. `updated_at` says since
    when: retention keeps the signal while its letter can still be replayed. Only the signal's
    latest command: an earlier one (a replayed dead letter, or one the latest waited behind) leaves
    the latest's state as it is."""
    await session.execute(
        update(signals)
        .where(_where(message), _latest(message))
        .values(delivery_state="dead_lettered", next_try_at=None, last_error=error, updated_at=utcnow())
    )


POSSIBLY = "possibly_sent"  # the audit action's suffix: a registration that may be in the index


async def possibly_registered(session: AsyncSession, message: Envelope) -> None:
    """Audit a dead-lettered registration that was sent without an answer (a timeout, a lost
    connection, a 500/502/504, an unreadable 2xx): the index may hold the youth's data, and may have
    matched it, so it is in the youth's trail as a possible disclosure (rule 18). A replay that finds
    it there is audited as the registration, as `registered_at_earlier_attempt`."""
    signal_id = commands.signal_id_of(message)
    entry = AuditEntry(
        action=_action_of(message.type, POSSIBLY),
        user=CONNECTOR,
        youth_key=await _youth_key(session, signal_id),
        objects={"signal_id": signal_id, "message_id": message.message_id, "partner": "verwijsindex"},
    )
    await write_audit(session, entry, transaction_id=message.transaction_id, system=CONNECTOR)


async def _youth_key(session: AsyncSession, signal_id: str | None) -> str | None:
    if signal_id is None:
        return None
    row = (await session.execute(select(signals.c.youth_key).where(signals.c.signal_id == signal_id))).first()
    return row.youth_key if row else None
