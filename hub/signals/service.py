"""The signals service: store signals, queue their commands through the outbox, audit every change.

Public, stable functions (the mail/borging area calls the first two):
- `active_signals_of(session, caseworker_id)`: the caseworker's ACTIEF signals.
- `request_contact_change(session, hub_or_topic, signal_id, new_caseworker, transaction_id)`;
  it refuses a new contact person who may not be one (`UnfitContact`; `rules.contact_problem`).
Each writes in the caller's transaction; after it commits, call `hub.relay.wake()` (or wait for
the relay's next poll) to publish the queued command.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.clock import aware, today
from hub.directory import CaseworkerNotFound, get_caseworker
from hub.errors import PermanentError
from hub.signals import commands, rules
from hub.signals.tables import signals
from hub.spine.outbox import add_to_outbox
from hub.topics import VERWIJSINDEX_SIGNAL
from schemas.caseworker import Caseworker, ContactDetails
from schemas.envelope import Envelope, utcnow
from schemas.signal import SignalStatus, SignalYouth, VerwijsindexSignal, WithdrawalReason

if TYPE_CHECKING:
    from hub.signals.waiting import RegistrationWaits
    from hub.store import Store

SYSTEM = "ketenhub.signals"
STATUS_AFTER = {
    WithdrawalReason.ONTERECHT: SignalStatus.INGETROKKEN_ONTERECHT,
    WithdrawalReason.RISICO_WEG: SignalStatus.BEEINDIGD_RISICO_WEG,
}


class SignalNotFound(PermanentError):
    """No signal with this id."""


class SignalNotActive(PermanentError):
    """The signal was withdrawn, ended or expired; it can no longer change."""


class UnfitContact(PermanentError):
    """The caseworker cannot be a signal's contact person: not authorised to signal (rule 13), or a
    phone number the Verwijsindex cannot take. The message names the caseworker, never a youth."""


class NotInformed(PermanentError):
    """Rule 14 on the day a registration would be sent: the youth or the parents were not informed
    for the youth's age that day. The message names the fields missing, never a value."""


# PostgreSQL advisory lock space (the first of two int4 keys, a key space apart from the one-bigint
# locks elsewhere) of one youth's signals: `active_signal_for` holds it while a registration decides.
SIGNAL_LOCK = 7_306_001


class _HasTopic(Protocol):
    def topic(self, name: str) -> str: ...


def signal_topic(hub_or_topic: _HasTopic | str) -> str:
    """The full name of `verwijsindex.signal.v1` (with the hub's prefix), or the given name."""
    return hub_or_topic if isinstance(hub_or_topic, str) else hub_or_topic.topic(VERWIJSINDEX_SIGNAL.name)


def signal_from_row(row: Any) -> VerwijsindexSignal:
    """A stored signal as the canonical model."""
    return VerwijsindexSignal(
        signal_id=row.signal_id,
        youth=SignalYouth(
            bsn=row.bsn,
            given_names=row.given_names,
            surname=row.surname,
            birth_date=row.birth_date,
            gender=row.gender,
            municipality=row.municipality,
        ),
        organisation=row.organisation,
        caseworker=ContactDetails.model_validate(row.contact),
        caseworker_id=row.caseworker_id,
        created=row.created,
        end_date=row.end_date,
        status=row.status,
        parent_letter_sent_at=row.parent_letter_sent_at,
        youth_informed_at=row.youth_informed_at,
        deferral_reason=row.deferral_reason,
    )


async def signal_row(session: AsyncSession, signal_id: str, *, lock: bool = False) -> Any:
    """The stored row of a signal (with youth key and delivery status); SignalNotFound when unknown.
    With `lock`, the row stays locked until the transaction ends, for a decision on its status (see
    `hub.handovers.service.get_handover`)."""
    query = select(signals).where(signals.c.signal_id == signal_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise SignalNotFound(f"signal {signal_id!r} is unknown")
    return row


async def active_signals_of(
    session: AsyncSession, caseworker_id: str, *, lock: bool = False, day: date | None = None
) -> list[VerwijsindexSignal]:
    """The ACTIEF signals whose contact is `caseworker_id`, oldest first (signal_id always set).

    With `day`, only those still running that day: a signal past its end date is no longer active
    (nothing marks it VERLOPEN), and moving or withdrawing it is refused (`SignalNotActive`).

    With `lock`, they stay locked until the transaction ends, for moving them: a concurrent move of
    the same signals waits, then finds them no longer this caseworker's (PostgreSQL re-checks the
    condition after the wait; SQLite's write transactions run one at a time).
    """
    query = (
        select(signals)
        .where(signals.c.caseworker_id == caseworker_id, signals.c.status == SignalStatus.ACTIEF.value)
        .order_by(signals.c.created, signals.c.signal_id)
    )
    if day is not None:
        query = query.where(signals.c.end_date >= day)
    rows = (await session.execute(query.with_for_update() if lock else query)).all()
    return [signal_from_row(r) for r in rows]


async def active_signal_for(
    session: AsyncSession, youth_key: str, organisation: str, day: date
) -> str | None:
    """The id of `organisation`'s ACTIEF signal on the youth that still runs on `day`, or None.

    On PostgreSQL it holds the youth's signal lock until the transaction ends, so that two
    registrations at once cannot both find none and both store one; SQLite has one writer. A
    registration takes the youth's case lock before it (hub.store.locks: the case lock first).
    """
    if session.get_bind().dialect.name == "postgresql":
        # a youth key is 64 hex digits; its first 7 make a positive int4, the lock's second key
        await session.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:key AS integer))"),
            {"space": SIGNAL_LOCK, "key": int(youth_key[:7], 16)},
        )
    query = (
        select(signals.c.signal_id)
        .where(
            signals.c.youth_key == youth_key,
            signals.c.organisation == organisation,
            signals.c.status == SignalStatus.ACTIEF.value,
            signals.c.end_date >= day,
        )
        .order_by(signals.c.created, signals.c.signal_id)
        .limit(1)
    )
    return (await session.execute(query)).scalar()


def contact_of(caseworker: Caseworker, organisation: str) -> ContactDetails:
    """A caseworker's contact card for the Verwijsindex."""
    return ContactDetails(
        name=caseworker.name, organisation=organisation, email=caseworker.email, phone=caseworker.phone
    )


async def _queue(
    session: AsyncSession, topic: str, message: Envelope, youth_key: str, signal_id: str
) -> None:
    await add_to_outbox(session, topic, message, key=youth_key)
    await session.execute(
        update(signals)
        .where(signals.c.signal_id == signal_id)
        .values(
            delivery_command=message.type,
            delivery_message_id=message.message_id,
            delivery_state="queued",
            attempt=0,
            next_try_at=None,
            last_error=None,
            updated_at=utcnow(),
        )
    )


def new_signal_row(signal: VerwijsindexSignal, youth_key: str) -> dict[str, Any]:
    """A new signal as the hub holds it: what the Verwijsindex connector checks a command against."""
    youth = signal.youth
    return {
        "signal_id": signal.signal_id,
        "youth_key": youth_key,
        "bsn": youth.bsn,
        "given_names": youth.given_names,
        "surname": youth.surname,
        "birth_date": youth.birth_date,
        "gender": youth.gender.value,
        "municipality": youth.municipality,
        "organisation": signal.organisation,
        "caseworker_id": signal.caseworker_id,
        "contact": signal.caseworker.model_dump(mode="json"),
        "created": signal.created,
        "end_date": signal.end_date,
        "status": signal.status.value,
        "parent_letter_sent_at": signal.parent_letter_sent_at,
        "youth_informed_at": signal.youth_informed_at,
        "deferral_reason": signal.deferral_reason,
        "delivery_state": "queued",
        "attempt": 0,
        "updated_at": utcnow(),
    }


async def store_signal(
    session: AsyncSession,
    hub_or_topic: _HasTopic | str,
    signal: VerwijsindexSignal,
    *,
    youth_key: str,
    user: str,
    transaction_id: str,
) -> None:
    """Store a new signal and queue its register command (one transaction, audited).

    UnfitContact when the Verwijsindex cannot take the contact's phone number: the command would
    only be dead-lettered."""
    assert signal.signal_id is not None and signal.caseworker_id is not None
    if (problem := rules.phone_problem(signal.caseworker.phone)) is not None:
        raise UnfitContact(f"caseworker {signal.caseworker_id!r}: {problem}")
    await session.execute(insert(signals).values(new_signal_row(signal, youth_key)))
    message = commands.register_command(signal, transaction_id)
    await _queue(session, signal_topic(hub_or_topic), message, youth_key, signal.signal_id)
    await _audit(session, "signal.registered", user, youth_key, signal.signal_id, transaction_id)


async def request_withdrawal(
    session: AsyncSession,
    hub_or_topic: _HasTopic | str,
    signal_id: str,
    reason: WithdrawalReason,
    *,
    user: str,
    transaction_id: str,
    day: date | None = None,
) -> SignalStatus:
    """Withdraw an ACTIEF signal (rule 15) and queue the withdraw command; returns the new status.

    `day` is today in the Netherlands (default: by the system clock); a signal past its end date
    is no longer active."""
    row = await _active_row(session, signal_id, day or today())
    status = STATUS_AFTER[reason]
    await session.execute(
        update(signals)
        .where(signals.c.signal_id == signal_id)
        .values(status=status.value, withdrawal_reason=reason.value)
    )
    message = commands.withdraw_command(signal_id, reason, transaction_id)
    await _queue(session, signal_topic(hub_or_topic), message, row.youth_key, signal_id)
    await _audit(
        session, "signal.withdrawn", user, row.youth_key, signal_id, transaction_id, reason=reason.value
    )
    return status


async def request_contact_change(
    session: AsyncSession,
    hub_or_topic: _HasTopic | str,
    signal_id: str,
    new_caseworker: Caseworker,
    transaction_id: str,
    *,
    user: str = "borging",
    day: date | None = None,
) -> None:
    """Make `new_caseworker` the signal's contact and queue the change for the Verwijsindex.

    `hub_or_topic` is the Hub (its prefixed `verwijsindex.signal.v1` is used) or a full topic name.
    Writes, in the caller's transaction: the ChangeSignalContact command in the outbox keyed by the
    youth key, the signal's new caseworker and contact, and an audit entry (rule 17, 18). Raises
    SignalNotFound, SignalNotActive or, for a caseworker who may not be a signal's contact person
    (rule 13, or a phone number the index cannot take), UnfitContact (all PermanentError). `day` as
    for `request_withdrawal`.
    """
    if (problem := rules.contact_problem(new_caseworker)) is not None:
        raise UnfitContact(f"caseworker {new_caseworker.caseworker_id!r}: {problem}")
    row = await _active_row(session, signal_id, day or today())
    contact = contact_of(new_caseworker, row.organisation)
    await session.execute(
        update(signals)
        .where(signals.c.signal_id == signal_id)
        .values(caseworker_id=new_caseworker.caseworker_id, contact=contact.model_dump(mode="json"))
    )
    message = commands.change_contact_command(
        signal_id, new_caseworker.caseworker_id, contact, transaction_id
    )
    await _queue(session, signal_topic(hub_or_topic), message, row.youth_key, signal_id)
    await _audit(
        session,
        "signal.contact_changed",
        user,
        row.youth_key,
        signal_id,
        transaction_id,
        previous_caseworker_id=row.caseworker_id,
        caseworker_id=new_caseworker.caseworker_id,
    )


# The states of a signal's latest command (`hub.signals.delivery`) while it has not been settled, and
# how long a registration in one of them refuses another (its fate may never be recorded: a letter
# parked as too large and discarded, a hook that failed).
_ON_ITS_WAY = ("queued", "retrying")
REGISTRATION_PATIENCE = timedelta(hours=1)


class RegistrationOnItsWay(PermanentError):
    """A registration of the signal is still on its way to the Verwijsindex (queued, on the signal
    topic and not yet taken in, parked, or an open dead letter to replay), or was asked for a moment
    ago: registering it again would disclose the youth to the index twice."""


async def register_again(
    store: Store,
    hub_or_topic: _HasTopic | str,
    signal_id: str,
    *,
    user: str,
    transaction_id: str,
    waits: RegistrationWaits,
    day: date | None = None,
) -> str:
    """Queue an active signal's registration once more, naming its contact as the hub holds it now;
    returns the command's message id.

    For a signal the Verwijsindex holds no more (it lost it), or whose registration will not reach it
    (its dead letter was discarded or outlived the DLQ's term): a contact change then is a dead letter
    that says so. Refused while a registration of it is on its way (`waits`: replay that one; or the
    signal's latest command, not yet settled, is one: a second request at once), and,
    as a registration is, for a contact who may not signal (rule 13) or whose phone the index cannot
    take. Every registration sent is a disclosure, audited by the connector; this request is audited
    with who asked, the command and the contact it names. SignalNotFound, SignalNotActive,
    RegistrationOnItsWay, UnfitContact; NotInformed when rule 14 forbids sending it today (the youth
    turned 12 or 16 since it was made)."""
    async with store.read() as session:
        row = await signal_row(session, signal_id)
    if await waits(signal_id, row.youth_key):
        raise RegistrationOnItsWay(
            f"a registration of signal {signal_id!r} is still on its way to the Verwijsindex (queued,"
            " on the signal topic and not yet taken in by the connector, parked, or an open dead"
            " letter): replay that one, or wait for it"
        )
    async with store.transaction() as session:
        row = await _active_row(session, signal_id, day or today())
        asked_at = aware(row.updated_at)
        if (
            row.delivery_command == commands.REGISTER
            and row.delivery_state in _ON_ITS_WAY
            and utcnow() - asked_at < REGISTRATION_PATIENCE
        ):
            # under the signal's lock: a second request at once (a double click, two operators), which
            # `waits` may not see yet (the first not committed when it looked). For a while only: a
            # registration whose fate was never recorded must not block the signal
            again = (asked_at + REGISTRATION_PATIENCE).isoformat(timespec="seconds")
            raise RegistrationOnItsWay(
                f"a registration of signal {signal_id!r} was queued for the Verwijsindex at"
                f" {asked_at.isoformat(timespec='seconds')} and has not reached it yet: wait for it (if it"
                f" never does, it can be asked for again from {again})"
            )
        signal = signal_from_row(row)
        if (problem := rules.not_informed(signal, day or today())) is not None:
            raise NotInformed(f"signal {signal_id!r}: {problem}")
        if (problem := rules.phone_problem(signal.caseworker.phone)) is not None:
            raise UnfitContact(f"caseworker {row.caseworker_id!r}: {problem}")
        try:
            contact = await get_caseworker(session, row.caseworker_id)
        except CaseworkerNotFound:
            raise UnfitContact(f"caseworker {row.caseworker_id!r} is not in the directory") from None
        if (problem := rules.contact_problem(contact)) is not None:
            raise UnfitContact(f"caseworker {row.caseworker_id!r}: {problem}")
        message = commands.register_command(signal, transaction_id)
        await _queue(session, signal_topic(hub_or_topic), message, row.youth_key, signal_id)
        await _audit(
            session,
            "signal.registered_again",
            user,
            row.youth_key,
            signal_id,
            transaction_id,
            message_id=message.message_id,
            caseworker_id=row.caseworker_id,
        )
    return message.message_id


async def _active_row(session: AsyncSession, signal_id: str, day: date) -> Any:
    row = await signal_row(session, signal_id, lock=True)  # two withdrawals at once: in turn
    if row.status != SignalStatus.ACTIEF.value or row.end_date < day:
        raise SignalNotActive(f"signal {signal_id!r} is no longer active")
    return row


async def _audit(
    session: AsyncSession,
    action: str,
    user: str,
    youth_key: str,
    signal_id: str,
    transaction_id: str,
    **objects: Any,
) -> None:
    entry = AuditEntry(
        action=action, user=user, youth_key=youth_key, objects={"signal_id": signal_id, **objects}
    )
    await write_audit(session, entry, transaction_id=transaction_id, system=SYSTEM)
