"""The Verwijsindex connector component: signal commands through the retry ladder, matches back.

Registered as REGISTRARS["verwijsindex"]. It consumes `verwijsindex.signal.v1` (RegisterSignal,
WithdrawSignal, ChangeSignalContact; keyed by the youth key) and delivers each command over HTTP
through the shared RetryLadder, which keeps one youth's commands in order. It polls the match feed
into `verwijsindex.match.v1`. With no `verwijsindex.url` configured it runs the simulator in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import date
from typing import Any, NamedTuple

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.verwijsindex.client import (
    AnswerUnreadable,
    IndexConflict,
    MayHaveBeenDone,
    NotInIndex,
    VerwijsindexClient,
    youth_secrets,
)
from connectors.verwijsindex.contract import (
    Contactpersoon,
    IntrekkingsReden,
    Organisatie,
    Signaal,
    SignaalRegistratie,
    SignaalStatus,
)
from connectors.verwijsindex.feed import MatchFeed, index_of
from connectors.verwijsindex.mapping import contact_van, registratie_van
from connectors.verwijsindex.sim_server import SimulatorServer
from hub import clock
from hub.errors import PermanentError
from hub.retry import Delivery, RetryLadder, RetryPolicy, deliver_through, ladder_on
from hub.retry.recent import RecentIds
from hub.runtime import Hub
from hub.signals import commands, delivery
from hub.signals.rules import not_informed
from hub.signals.tables import signals
from hub.signals.waiting import LADDER, RegistrationWaits, waits_of
from hub.store import Store
from hub.topics import VERWIJSINDEX_MATCH, VERWIJSINDEX_SIGNAL
from hub.urls import shown_http_url
from schemas._base import as_code
from schemas.caseworker import ContactDetails
from schemas.envelope import Envelope
from schemas.problems import field_path
from schemas.signal import SignalStatus, VerwijsindexSignal

NAME = LADDER  # the component, its consumer group and its retry ladder
WITHHELD = delivery.WITHHELD  # the hub withdrew the signal before this command went: nothing was sent
NOT_IN_INDEX = delivery.NOT_IN_INDEX  # a withdrawal or contact change the index had no signal for
# Why a contact change the index holds no signal for is a dead letter (no registration is on its way).
NOT_REGISTERED = (
    "the Verwijsindex holds no such signal and no registration of it is waiting (none queued, on the"
    " signal topic, parked, or an open dead letter): register it again (`ketenhub signals"
    " register-again {signal_id}`, or POST /ops/api/signals/{signal_id}/register-again), then replay"
    " this change or discard it"
)
_CHECKED = (commands.REGISTER, commands.CHANGE_CONTACT, commands.WITHDRAW)  # looked up per round
_WITHDRAWN = {SignalStatus.INGETROKKEN_ONTERECHT.value, SignalStatus.BEEINDIGD_RISICO_WEG.value}


def _parse(model: type[Any], message: Envelope) -> Any:
    try:
        return model.model_validate(message.payload)
    except ValidationError as exc:
        # a field's name may be the sender's own text (an unknown key: a name, a birth date): masked
        masks: dict[str, str] = {}
        fields = sorted({field_path(e["loc"], masks) if e["loc"] else "payload" for e in exc.errors()})
        # rule 11: an unknown field (a reason, an offence, a parent) is refused, never sent
        raise PermanentError(
            f"{message.type} refused: fields outside the whitelist or invalid: {', '.join(fields)[:200]}"
        ) from None


class _Held(NamedTuple):
    """A signal as the hub holds it, as far as a command needs it: its status and its contact now,
    its youth key (how its commands are keyed), and what the index's errors must not echo of its
    youth (`secrets`: the BSN and the names)."""

    status: str
    caseworker_id: str
    contact: Any  # schemas.caseworker.ContactDetails as stored (JSON)
    youth_key: str
    secrets: tuple[str, ...] = ()
    end_date: date | None = None


def _secrets(held: _Held | None) -> tuple[str, ...]:
    """What an error of the index about this signal must not quote (none known: the BSN-like only)."""
    return held.secrets if held is not None else ()


async def _held(store: Store, signal_ids: set[str]) -> dict[str, _Held]:
    """The hub's status and contact of each known signal among `signal_ids`."""
    c = signals.c
    async with store.read() as session:
        found = await session.execute(
            select(
                c.signal_id,
                c.status,
                c.caseworker_id,
                c.contact,
                c.youth_key,
                c.bsn,
                c.given_names,
                c.surname,
                c.end_date,
            ).where(c.signal_id.in_(signal_ids))
        )
        return {
            row.signal_id: _Held(
                row.status,
                row.caseworker_id,
                row.contact,
                row.youth_key,
                youth_secrets(row.bsn, row.given_names, row.surname),
                row.end_date,
            )
            for row in found
        }


def _contact_now(
    held: _Held | None, caseworker_id: str | None, queued: ContactDetails
) -> tuple[str | None, ContactDetails]:
    """The contact a command names when it goes: the signal's as the hub holds it now (a borging or a
    contact change may have moved it while the command waited), else the one it was queued with."""
    if held is None:
        return caseworker_id, queued
    try:
        return held.caseworker_id, ContactDetails.model_validate(held.contact)
    except ValidationError:
        raise PermanentError("the signal's contact as the hub holds it is invalid") from None


def _over(held: _Held | None, day: date) -> bool:
    """Whether the signal is over as the hub holds it on `day`: withdrawn, or past its end date
    (nothing marks a signal VERLOPEN in the hub; the index holds it so from the day after)."""
    if held is None:
        return False
    return held.status in _WITHDRAWN or (held.end_date is not None and held.end_date < day)


def _earlier_attempt(index: Signaal | None, body: SignaalRegistratie) -> bool:
    """Whether what the index holds under the id is this registration, taken at an earlier attempt:
    still active, the same organisation and dates, whatever its contact. The index keeps the body of
    the first PUT it took, with the contact then; a PATCH changes its contact, not that body. So once
    the contact moved, every later PUT conflicts, also when the index's contact is already the one
    this PUT names (a PATCH of an earlier turn-around, or the change behind it, got through)."""
    return index is not None and index.status is SignaalStatus.ACTIEF and _same_signal(index, body)


def _same_signal(index: Signaal, body: SignaalRegistratie) -> bool:
    return (index.organisatie, index.aangemaakt, index.einddatum) == (
        body.organisatie,
        body.aangemaakt,
        body.einddatum,
    )


def _whose(found: Contactpersoon, candidates: Sequence[tuple[str | None, ContactDetails]]) -> str:
    """The caseworker id of the first candidate whose contact card is `found`; "" when none is."""
    for caseworker_id, details in candidates:
        with suppress(PermanentError):  # a card the index could not take is not the one it holds
            if caseworker_id and contact_van(details) == found:
                return caseworker_id
    return ""


class VerwijsindexConnector:
    """Delivers signal commands to the index; shown in /readyz, closed when the hub stops.

    A command must not bring back what the hub withdrew. Per-youth order holds while a command is
    parked, not once it is a dead letter: a withdrawal can reach the index before the registration
    it follows is replayed. So a registration or a change of contact for a signal the hub has
    withdrawn is withheld, and a withdrawal the index answers "no such signal" is done. A registration
    is withheld only when the index confirms it holds no such signal: an earlier attempt whose answer
    was lost may have got through, and then it was a disclosure, audited as one, which the withdrawal
    behind it ends; it is not sent again (nor given a new contact). A signal past its end date is over
    as a withdrawn one is: its registration and contact changes are withheld the same way.

    A registration or a change of contact names the signal's contact as the hub holds it when the
    command goes, not the one it was queued with: while it waited (the retry ladder, a dead letter
    replayed days later) borging or a caseworker may have moved the signal (rule 17), and the index
    must not be told of someone who left or may no longer signal. A change replayed after a newer one
    so names the newer contact. A change the index answers "no such signal" is moot, not a dead
    letter, while a registration of the signal is on its way (queued, on the signal topic, parked,
    or an open dead letter: `waiting`): that registration, when it goes, names the contact the hub
    holds then. With none on its way (the index lost the signal, or its registration's letter was
    discarded or outlived the DLQ's term) nothing would register it again: the change is a dead
    letter saying so.

    The index takes a registration once, and keeps the body of the PUT it took: when an earlier
    attempt got through with the contact then (its answer lost) and the contact changed since, every
    later attempt conflicts. An active signal there under the id, of this organisation and with these
    dates, is that registration, whatever its contact: it is given the contact now as a change when
    it holds another, and either way the registration was delivered, and is audited as the disclosure
    it was, with the contact the index held when this attempt found it.
    """

    def __init__(
        self,
        client: VerwijsindexClient,
        organisatie: Organisatie,
        simulator: SimulatorServer | None,
        store: Store | None = None,
        waiting: RegistrationWaits | None = None,
        today: Callable[[], date] = clock.today,
    ) -> None:
        self.client, self.organisatie, self.simulator, self.store = client, organisatie, simulator, store
        # Whether a registration of a signal is on its way (`waiting.registration_waits`); without it
        # none is taken to be, and a change the index holds no signal for is a dead letter.
        self.waiting = waiting
        self.today = today  # the Dutch day, as the hub's API judges a signal's end date (`Hub.today`)
        self.feed: MatchFeed | None = None
        self.ladder: RetryLadder | None = None
        # What deliver found for a message that is no plain disclosure (WITHHELD, NOT_IN_INDEX), whose
        # contact a registration or change named (the caseworker id), and, for a registration the
        # index had taken at an earlier attempt, whose contact it held then ("" when neither the
        # queued nor the current one), for the hooks that record them; and the signals `prepare`
        # looked up for the round in hand. A status only ever goes from ACTIEF to withdrawn, and a
        # withdrawal waits behind the command in hand, so one looked up a moment ago at worst lets
        # through a call the withdrawal undoes. Likewise a contact changed since the lookup is sent
        # by the change queued behind the command in hand.
        self.outcomes = RecentIds()
        self.contacts = RecentIds()
        self.earlier = RecentIds()
        # Registrations sent at some attempt with no answer to say whether the index took them: one
        # that is dead-lettered is audited as possibly in the index (rule 18; `on_dead`). Kept across
        # attempts; known to the process that made them.
        self.unsure = RecentIds()
        self._held: dict[str, _Held | None] = {}

    @property
    def url(self) -> str | None:
        """The in-process simulator's URL (embedded default), else None."""
        return self.simulator.url if self.simulator is not None else None

    async def prepare(self, messages: Sequence[Envelope]) -> None:
        """The hub's status and contact of every signal a round registers, changes or withdraws (and its
        youth's names, which the index's errors must not echo), in one query."""
        self._held = {}
        wanted = {
            signal_id
            for m in messages
            if m.type in _CHECKED and (signal_id := as_code(m.payload.get("signal_id"))) is not None
        }
        if wanted and self.store is not None:
            self._held = dict.fromkeys(wanted) | await _held(self.store, wanted)

    async def deliver(self, message: Envelope) -> None:
        """One command, one idempotent call; raises TransientError or PermanentError."""
        self.outcomes.discard(message.message_id)
        self.contacts.discard(message.message_id)
        self.earlier.discard(message.message_id)
        if message.type == commands.REGISTER:
            signal: VerwijsindexSignal = _parse(VerwijsindexSignal, message)
            assert signal.signal_id is not None
            held = await self._held_of(signal.signal_id)
            if self.store is not None and held is None:
                # Registered through the API, a signal is stored before its command is queued: one the
                # hub does not hold was purged (its term ended) or never went through rules 13 and 14.
                raise PermanentError("the hub holds no signal with this id: it is not registered")
            found = None
            if _over(held, self.today()):
                found = await self._in_index(signal.signal_id, message, _secrets(held))
                if found is None:
                    self.outcomes.add(message.message_id, WITHHELD)
                    return
            if found is None and (problem := not_informed(signal, self.today())) is not None:
                # Rule 14 forbids sending it today (the youth turned 12 or 16 since it was made,
                # uninformed for that age). An earlier attempt whose answer was lost may have got
                # through before: then the index holds it, and that is recorded below; else nothing
                # went, and the dead letter says why
                found = await self._in_index(signal.signal_id, message, _secrets(held))
                if found is None:
                    # the index said it holds none: an earlier attempt without an answer did not get
                    # through, so the dead letter is no "possibly registered" disclosure
                    self.unsure.discard(message.message_id)
                    raise PermanentError(problem)  # the DLQ; the caseworker sees it undelivered
            contact_id, contact = _contact_now(held, signal.caseworker_id, signal.caseworker)
            body = registratie_van(signal.model_copy(update={"caseworker": contact}), self.organisatie)
            if found is not None:
                # The index holds it, active or ended: an earlier attempt got through (its answer
                # lost), and was delivered then. The signal is over, or may not be sent today (rule
                # 14): it is not sent again (the youth's data once more, and, with another contact, a
                # PUT the index refuses for ever), nor given a new contact; the withdrawal behind it
                # ends it, or has.
                if not _same_signal(found, body):
                    raise IndexConflict(
                        "the Verwijsindex holds another signal under this id (another organisation or"
                        " other dates); this registration may not be sent (the hub withdrew or ended"
                        " the signal, or rule 14 forbids it today): nothing was sent"
                    )
                if held is not None and await self._recorded(signal.signal_id, held.youth_key):
                    # the index's copy is a registration already audited (one registered again, or
                    # delivered before this one was replayed): this one sent nothing
                    self.outcomes.add(message.message_id, WITHHELD)
                    return
                self.contacts.add(message.message_id, "")
                candidates = [(contact_id, contact), (signal.caseworker_id, signal.caseworker)]
                self.earlier.add(message.message_id, _whose(found.contactpersoon, candidates))
                return
            found = await self._register(signal.signal_id, body, message)
            self.contacts.add(message.message_id, contact_id or "")
            if found is not None:
                candidates = [(contact_id, contact), (signal.caseworker_id, signal.caseworker)]
                self.earlier.add(message.message_id, _whose(found.contactpersoon, candidates))
        elif message.type == commands.WITHDRAW:
            cmd: commands.WithdrawSignal = _parse(commands.WithdrawSignal, message)
            reden = IntrekkingsReden(cmd.reason.value)
            # a signal purged since (its row gone) leaves no names to keep out: the BSN-like still is
            secrets = _secrets(await self._held_of(cmd.signal_id))
            try:
                await self.client.withdraw(cmd.signal_id, reden, message.transaction_id, secrets=secrets)
            except NotInIndex:  # never registered there (or gone): nothing of it is active
                self.outcomes.add(message.message_id, NOT_IN_INDEX)
        elif message.type == commands.CHANGE_CONTACT:
            change: commands.ChangeSignalContact = _parse(commands.ChangeSignalContact, message)
            held = await self._held_of(change.signal_id)
            if _over(held, self.today()):  # withdrawn (the withdrawal behind it ends it), or ended
                self.outcomes.add(message.message_id, WITHHELD)
                return
            contact_id, contact = _contact_now(held, change.caseworker_id, change.contact)
            try:
                await self.client.change_contact(
                    change.signal_id, contact_van(contact), message.transaction_id, secrets=_secrets(held)
                )
            except NotInIndex as exc:
                if not await self._registration_waits(change.signal_id, held):
                    raise NotInIndex(f"{NOT_REGISTERED.format(signal_id=change.signal_id)} ({exc})") from None
                # its registration has not got there: when it goes, it names the contact then
                self.outcomes.add(message.message_id, NOT_IN_INDEX)
                return
            self.contacts.add(message.message_id, contact_id or "")
        else:
            raise PermanentError(f"unknown command type on {VERWIJSINDEX_SIGNAL.name}")

    async def _register(self, signal_id: str, body: SignaalRegistratie, message: Envelope) -> Signaal | None:
        """PUT the registration; None when the index took it now (or had it with this very body).
        When it took it at an earlier attempt (its answer was lost, then the contact changed), the
        signal as the index held it, given the contact now as a change when it held another."""
        youth = body.jeugdige
        secrets = youth_secrets(youth.bsn, youth.voornamen, youth.geslachtsnaam, youth.voorvoegsel)
        try:
            await self.client.register(signal_id, body, message.transaction_id)
        except (MayHaveBeenDone, AnswerUnreadable):
            self.unsure.add(message.message_id)
            raise
        except IndexConflict:
            found = await self._in_index(signal_id, message, secrets)
            if found is None or not _earlier_attempt(found, body):
                raise
            if found.contactpersoon != body.contactpersoon:
                await self.client.change_contact(
                    signal_id, body.contactpersoon, message.transaction_id, secrets=secrets
                )
            return found
        return None

    async def on_dead(self, session: AsyncSession, message: Envelope, error: str) -> None:
        """The command is dead-lettered (`delivery.on_dead`); a registration sent at some attempt
        without an answer may be in the index all the same: audited so (rule 18)."""
        await delivery.on_dead(session, message, error)
        # kept, not forgotten here: a transaction that fails runs this again (a bounded memory)
        if message.type == commands.REGISTER and message.message_id in self.unsure:
            await delivery.possibly_registered(session, message)

    async def _registration_waits(self, signal_id: str, held: _Held | None) -> bool:
        """Whether a registration of the signal is on its way to the index (see `waiting`); not
        when the hub holds no such signal, or cannot look."""
        if held is None or self.waiting is None:
            return False
        return await self.waiting(signal_id, held.youth_key)

    async def _held_of(self, signal_id: str) -> _Held | None:
        """The hub's status and contact of the signal (None: it holds none, or has no store): from
        the round's lookup, else looked up (a store failure on the way is transient to the ladder)."""
        if self.store is None:
            return None
        if signal_id in self._held:
            return self._held[signal_id]
        return (await _held(self.store, {signal_id})).get(signal_id)

    async def _recorded(self, signal_id: str, youth_key: str) -> bool:
        """Whether a registration of the signal is recorded as a disclosure already."""
        if self.store is None:
            return False
        async with self.store.read() as session:
            return await delivery.registration_recorded(session, signal_id, youth_key)

    async def _in_index(self, signal_id: str, message: Envelope, secrets: tuple[str, ...]) -> Signaal | None:
        """The signal as the index holds it; None when it answers "not found" for it."""
        try:
            return await self.client.get(signal_id, message.transaction_id, secrets=secrets)
        except NotInIndex:
            return None

    async def on_delivered(self, session: AsyncSession, message: Envelope) -> None:
        """Record the outcome: a disclosure (naming the contact that went), or what `deliver` found
        instead."""
        await delivery.on_delivered(
            session,
            message,
            outcome=self.outcomes.note(message.message_id),
            contact=self.contacts.note(message.message_id),
            earlier=self.earlier.note(message.message_id),
        )

    async def on_delivered_many(self, session: AsyncSession, messages: Sequence[Envelope]) -> None:
        """`on_delivered` for a round."""
        await delivery.on_delivered_many(
            session,
            messages,
            outcome_of=self.outcomes.note,
            contact_of=self.contacts.note,
            earlier_of=self.earlier.note,
        )

    async def ping(self) -> None:
        """Raise when the index does not answer its health check."""
        if not await self.client.ping():
            raise ConnectionError("verwijsindex does not answer")

    def status(self) -> dict[str, Any]:
        """For the console (GET /ops/api/connectors, its shape): the last call to the index that
        succeeded and the last that failed, a command's (the ladder's) or a match poll's while the
        polls fail. A command's own errors are also on its signal and in the DLQ."""
        out: dict[str, Any] = self.ladder.status() if self.ladder is not None else {"last_error": None}
        feed = self.feed
        if feed is None:
            return out
        if feed.last_success and (out.get("last_success") or "") < feed.last_success.isoformat():
            out["last_success"] = feed.last_success.isoformat()
        if feed.last_error and feed.last_error_at:
            at = feed.last_error_at.isoformat()
            if (out.get("last_error_at") or "") <= at:  # the feed's error, failing still, is newer
                out |= {"last_error": f"match feed: {feed.last_error}", "last_error_at": at}
        return out

    async def aclose(self) -> None:
        """Close pooled connections, then the in-process simulator."""
        await self.client.aclose()
        if self.simulator is not None:
            await asyncio.to_thread(self.simulator.stop)


def verwijsindex_component(policy: RetryPolicy | None = None, page_size: int = 100):  # type: ignore[no-untyped-def]
    """A registrar; `policy` overrides the schedule from settings (tests use a fast one)."""

    def register(hub: Hub) -> None:
        assert hub.spine is not None and hub.store is not None and hub.relay is not None
        s = hub.settings.verwijsindex
        simulator = None
        url = s.url
        if url is None:
            simulator = SimulatorServer()
            url = simulator.start()
        client = VerwijsindexClient(url, timeout=s.timeout_s, organisatie=s.organisatie_code)
        waiting = waits_of(hub.store, hub.settings.kafka, hub.kafka_options)
        connector = VerwijsindexConnector(
            client,
            Organisatie(code=s.organisatie_code, naam=s.organisatie_naam),
            simulator,
            hub.store,
            waiting,
            today=hub.today,
        )
        hub.components[NAME] = connector
        ladder = ladder_on(
            hub,
            VERWIJSINDEX_SIGNAL,
            name=NAME,
            group=NAME,
            partner=NAME,
            delivery=Delivery(
                deliver=connector.deliver,
                prepare=connector.prepare,
                on_delivered=connector.on_delivered,
                on_delivered_many=connector.on_delivered_many,
                on_parked=delivery.on_parked,
                on_dead=connector.on_dead,
            ),
            policy=policy or RetryPolicy(schedule_s=s.retry_schedule_s),
        )
        connector.ladder = ladder
        feed = MatchFeed(
            hub.store,
            client,
            topic=hub.topic(VERWIJSINDEX_MATCH.name),
            interval_s=s.poll_interval_s,
            page_size=page_size,
            on_published=hub.relay.wake,
            metrics=hub.metrics,
            index=index_of(s.url, s.organisatie_code),
        )
        connector.feed = feed
        hub.background["verwijsindex-matches"] = feed.run

        deliver_through(
            hub, VERWIJSINDEX_SIGNAL, ladder,
            doc="Deliver a signal command to the Verwijsindex, in order per youth, through the retry ladder.",
        )  # fmt: skip

    return register


register_verwijsindex = verwijsindex_component()


def banner_lines(hub: object) -> list[str]:
    """For `ketenhub run`'s banner: where the Verwijsindex is (the simulator's URL when in-process)."""
    connector = getattr(hub, "components", {}).get(NAME)
    if not isinstance(connector, VerwijsindexConnector):
        return []
    if connector.url is not None:
        return [f"  verwijsindex  {connector.url}/docs (in-process simulator)"]
    return [f"  verwijsindex  {shown_http_url(hub.settings.verwijsindex.url)}"]  # type: ignore[attr-defined]
