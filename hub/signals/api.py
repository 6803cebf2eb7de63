"""Caseworker endpoints for Verwijsindex signals: register, read (with delivery status), withdraw,
change contact, its matches, and the parent letter. No BSN in any URL; every read and change is audited.

Identity: the `X-Medewerker` header (hub.consent.caseworker), trusted only behind Halt's gateway
until caseworkers sign in through Halt's identity provider (a known limit).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.idempotency import IdempotencyKey, claim_of, create_once, replay_earlier
from hub.api.problems import HubStarting, InvalidParam, Problem
from hub.audit import AuditEntry, write_audit
from hub.clock import aware
from hub.consent.caseworker import (
    CurrentCaseworker,
    NotOnCase,
    refusals_audited,
    require_case,
    stands_in_for,
)
from hub.directory import CaseworkerNotFound, get_caseworker
from hub.runtime import Hub
from hub.signals import rules
from hub.signals.letter import letter_response
from hub.signals.matches import ended_status
from hub.signals.service import (
    SignalNotActive,
    SignalNotFound,
    active_signal_for,
    contact_of,
    request_contact_change,
    request_withdrawal,
    signal_row,
    store_signal,
)
from hub.signals.tables import matches
from hub.store.locks import lock_youths
from schemas._base import CanonicalModel, Code, ShortText
from schemas.caseworker import Caseworker, ContactDetails
from schemas.match import Match
from schemas.pseudonym import youth_key as make_key
from schemas.signal import NewSignalYouth, SignalStatus, VerwijsindexSignal, WithdrawalReason

router = APIRouter(prefix="/api/v1/signalen", tags=["signalen"])
SYSTEM = "ketenhub-api"


class SignalIn(CanonicalModel):
    """A new signal: only the rule-11 whitelist of the youth, plus the rule 12 and 14 facts."""

    youth: NewSignalYouth
    created: date | None = Field(default=None, description="default: today")
    end_date: date | None = Field(default=None, description="default: created + 1 year (config), rule 12")
    youth_informed_at: date | None = None
    parent_letter_sent_at: date | None = None
    deferral_reason: ShortText | None = Field(default=None, description="why informing is deferred (rule 14)")


class Delivery(CanonicalModel):
    """Where the signal's latest command is: queued, delivered, retrying, dead_lettered, or withheld
    (the signal was over when it was to go: nothing was sent, nothing is left to send)."""

    state: str
    command: str | None
    attempt: int
    next_try_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None


class SignalOut(CanonicalModel):
    """A signal as its caseworker sees it; no BSN."""

    signal_id: str
    youth_key: str
    given_names: str
    surname: str
    birth_date: date
    municipality: str
    organisation: str
    caseworker_id: str
    contact: ContactDetails
    created: date
    end_date: date
    status: SignalStatus
    withdrawal_reason: str | None
    youth_informed_at: date | None
    parent_letter_sent_at: date | None
    deferral_reason: str | None
    delivery: Delivery

    @classmethod
    def of(cls, row: Any, day: date) -> SignalOut:
        """From the stored row, as on `day` (the hub's today): an active signal past its end date is
        VERLOPEN, as every rule reads it (`ended_status`), though nothing writes that to the row."""
        return cls(
            **{k: getattr(row, k) for k in cls.model_fields if k not in ("delivery", "contact", "status")},
            status=ended_status(row.status, row.end_date, day) or row.status,
            contact=ContactDetails.model_validate(row.contact),
            delivery=Delivery(
                state=row.delivery_state,
                command=row.delivery_command,
                attempt=row.attempt,
                next_try_at=row.next_try_at,
                last_error=row.last_error,
                delivered_at=row.delivered_at,
            ),
        )


class WithdrawalIn(CanonicalModel):
    """Rule 15: why the signal is withdrawn."""

    reason: WithdrawalReason


class ContactIn(CanonicalModel):
    """The caseworker who becomes the signal's contact person."""

    caseworker_id: Code


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    if hub.store is None or hub.relay is None:
        raise HubStarting()
    return hub


def _tx(request: Request) -> str:
    return str(getattr(request.state, "transaction_id", None) or uuid.uuid4())


def _check_new(body: SignalIn, created: date, end: date, today: date) -> None:
    birth = body.youth.birth_date
    params: list[InvalidParam] = []
    if created > today:
        params.append(InvalidParam(name="created", reason="ligt in de toekomst"))
    if birth > created or rules.too_old(birth, created):
        params.append(InvalidParam(name="youth.birth_date", reason="de jeugdige is niet tussen 0 en 23 jaar"))
    elif problem := rules.end_date_problem(created, birth, end) or rules.end_date_passed(end, today):
        params.append(InvalidParam(name="end_date", reason=problem))
    informed = {
        "youth_informed_at": body.youth_informed_at,
        "parent_letter_sent_at": body.parent_letter_sent_at,
    }
    for name, given in informed.items():
        if given is not None and given > today:
            params.append(InvalidParam(name=name, reason="ligt in de toekomst"))
    if params:
        raise Problem(422, "Signaal ongeldig", "Het signaal voldoet niet aan de regels.", params=params)
    # rule 14 by the youth's age today, when the signal is sent, and on its creation date, whichever
    # asks more: a creation date set back made a youth of 12 today 11, and the signal went without
    # the youth informed; judged on today alone, one of 16 today but 15 then needs no parents' letter
    informing = (body.youth_informed_at, body.parent_letter_sent_at, body.deferral_reason)
    missing = list(
        dict.fromkeys(
            rules.informing_problems(birth, created, *informing)
            + rules.informing_problems(birth, today, *informing)
        )
    )
    if missing:
        raise Problem(
            422,
            "Eerst informeren",
            "Een signaal gaat pas weg als jeugdige en ouders zijn geïnformeerd, of met een reden "
            "van uitstel (regel 14).",
            params=[InvalidParam(name=n, reason=r) for n, r in missing],
        )


def _phone_unfit(name: str, problem: str) -> Problem:
    """The answer for a caseworker whose phone number the Verwijsindex cannot take."""
    return Problem(
        422,
        "Telefoonnummer past niet in de Verwijsindex",
        "Het telefoonnummer van de medewerker kan niet naar de Verwijsindex; pas het aan in het "
        "medewerkersbestand (6 tot 20 cijfers, met eventueel een + ervoor).",
        params=[InvalidParam(name=name, reason=problem)],
    )


class _AlreadySignalled(Exception):
    """The organisation has an active signal on this youth already."""

    def __init__(self, signal_id: str) -> None:
        super().__init__(signal_id)
        self.signal_id = signal_id


async def _refuse_second_signal(
    hub: Hub, request: Request, cw: Caseworker, key: str, existing: str
) -> Problem:
    """409 naming the active signal; audited, for the caseworker learns the youth has one (rule 18)."""
    assert hub.store is not None
    async with hub.store.transaction() as session:
        entry = AuditEntry(
            action="signal.register_refused",
            user=cw.caseworker_id,
            youth_key=key,
            objects={"signal_id": existing, "reason": "already_active"},
        )
        await write_audit(session, entry, transaction_id=_tx(request), system=SYSTEM)
    return Problem(
        409,
        "Al een actief signaal",
        f"Er staat al een actief signaal van deze organisatie op deze jeugdige: {existing}. Een tweede "
        "signaal wordt niet geregistreerd; trek het eerste in of wijzig de contactpersoon ervan.",
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SignalOut)
async def register_signal(
    body: SignalIn,
    request: Request,
    response: Response,
    cw: CurrentCaseworker,
    idempotency_key: IdempotencyKey = None,
) -> SignalOut:
    """Register a signal (rules 11-14); it is sent to the Verwijsindex through Kafka with retries.

    Sent again with the same `Idempotency-Key`, it answers with the signal the first one made.
    Only one who works on the youth's case, or nobody yet, registers one (else 403, audited as
    `signal.register_refused`, reason `not_on_case`); while the organisation has an active signal on
    the youth, another is refused (409, naming it)."""
    hub = _hub(request)
    assert hub.store is not None and hub.relay is not None
    secret = hub.settings.secret_value()
    claim = claim_of(
        idempotency_key,
        user=cw.caseworker_id,
        endpoint="POST /api/v1/signalen",
        request=body.model_dump_json().encode(),
        secret=secret,
        at=hub.clock(),
    )

    async def replay(session: AsyncSession, signal_id: str) -> Any:
        return await _audited_read(session, request, signal_id, cw, "signal.read")

    if (earlier := await replay_earlier(hub.store, claim, response, replay)) is not None:
        return SignalOut.of(earlier, hub.today())
    if not cw.meldingsbevoegd:
        raise Problem(
            403, "Niet meldingsbevoegd", "Alleen meldingsbevoegde medewerkers registreren signalen."
        )
    if (problem := rules.phone_problem(cw.phone)) is not None:
        raise _phone_unfit("caseworker.phone", problem)
    s = hub.settings.verwijsindex
    today = hub.today()
    created = body.created or today
    end = body.end_date or rules.default_end_date(created, body.youth.birth_date, s.default_end_years)
    _check_new(body, created, end, today)
    signal = VerwijsindexSignal(
        signal_id=str(uuid.uuid4()),
        youth=body.youth,
        organisation=s.organisatie_naam,
        caseworker=contact_of(cw, s.organisatie_naam),
        caseworker_id=cw.caseworker_id,
        created=created,
        end_date=end,
        youth_informed_at=body.youth_informed_at,
        parent_letter_sent_at=body.parent_letter_sent_at,
        deferral_reason=body.deferral_reason,
    )
    key = make_key(secret, body.youth.bsn)
    transaction_id = _tx(request)

    async def create(session: AsyncSession) -> tuple[str, Any]:
        assert signal.signal_id
        # The youth's case lock first, then the youth's signal lock (`active_signal_for`): while
        # another caseworker's first request on the youth commits, this one waits and then finds
        # them on the case (hub.store.locks: the case lock before any other lock of the case).
        await lock_youths(session, [key])
        # Holding a youth's signal makes one who works on its case (may_see_case): registering one
        # would open the others' consents and handovers of the youth to anyone meldingsbevoegd. And
        # asked first, so that one with no part in the case does not learn the youth has a signal,
        # nor its id (the 409); the 403 is audited, as it says the hub holds a case for this BSN.
        await require_case(session, key, cw)
        if (existing := await active_signal_for(session, key, signal.organisation, today)) is not None:
            raise _AlreadySignalled(existing)
        await store_signal(
            session, hub, signal, youth_key=key, user=cw.caseworker_id, transaction_id=transaction_id
        )
        return signal.signal_id, await signal_row(session, signal.signal_id)

    try:
        async with refusals_audited(
            hub.store, action="signal.register_refused", user=cw.caseworker_id,
            transaction_id=transaction_id, system=SYSTEM,
        ):  # fmt: skip
            row = await create_once(hub.store, claim, response, create, replay)
    except _AlreadySignalled as exc:
        # On PostgreSQL a request beside this one with the same key may have made it, committed while
        # this one waited for the youth's lock: that is this request's answer, not a refusal.
        if (earlier := await replay_earlier(hub.store, claim, response, replay)) is not None:
            return SignalOut.of(earlier, today)
        raise await _refuse_second_signal(hub, request, cw, key, exc.signal_id) from None
    hub.relay.wake()
    return SignalOut.of(row, today)


async def _own_row(hub: Hub, session: Any, signal_id: str, cw: Caseworker) -> Any:
    try:
        row = await signal_row(session, signal_id)
    except SignalNotFound:
        raise Problem(404, "Signaal niet gevonden", "Er is geen signaal met deze id.") from None
    if cw.caseworker_id != row.caseworker_id and not await stands_in_for(
        session, cw, [row.caseworker_id], hub.today()
    ):
        raise NotOnCase(row.youth_key, "Alleen de contactpersoon of diens vervanger ziet dit signaal.")
    return row


def _refused(request: Request, cw: Caseworker, action: str, signal_id: str) -> Any:
    """A 403 to one who neither holds the signal nor stands in for its holder (`NotOnCase`), audited
    as `action` under the youth's key, with who tried, in a transaction of its own: a privacy officer
    sees who looked where they may not."""
    hub = _hub(request)
    assert hub.store is not None
    return refusals_audited(
        hub.store, action=action, user=cw.caseworker_id, transaction_id=_tx(request), system=SYSTEM,
        signal_id=signal_id,
    )  # fmt: skip


async def _read(request: Request, signal_id: str, cw: Caseworker, action: str) -> Any:
    hub = _hub(request)
    assert hub.store is not None
    async with _refused(request, cw, f"{action}_refused", signal_id), hub.store.transaction() as session:
        return await _audited_read(session, request, signal_id, cw, action)


async def _audited_read(
    session: AsyncSession, request: Request, signal_id: str, cw: Caseworker, action: str
) -> Any:
    """The signal's row, when `cw` may see it; the read audited as `action` (rule 18)."""
    row = await _own_row(_hub(request), session, signal_id, cw)
    entry = AuditEntry(
        action=action, user=cw.caseworker_id, youth_key=row.youth_key, objects={"signal_id": signal_id}
    )
    await write_audit(session, entry, transaction_id=_tx(request), system=SYSTEM)
    return row


@router.get("/{signal_id}", response_model=SignalOut)
async def read_signal(signal_id: str, request: Request, cw: CurrentCaseworker) -> SignalOut:
    """A signal with its delivery status (audited read)."""
    row = await _read(request, signal_id, cw, "signal.read")
    return SignalOut.of(row, _hub(request).today())


@router.post("/{signal_id}/intrekking", response_model=SignalOut)
async def withdraw_signal(
    signal_id: str, body: WithdrawalIn, request: Request, cw: CurrentCaseworker
) -> SignalOut:
    """Withdraw a signal with reason ONTERECHT or RISICO_WEG (rule 15)."""
    hub = _hub(request)
    assert hub.store is not None and hub.relay is not None
    async with (
        _refused(request, cw, "signal.withdraw_refused", signal_id),
        hub.store.transaction() as session,
    ):
        await _own_row(hub, session, signal_id, cw)
        try:
            await request_withdrawal(
                session,
                hub,
                signal_id,
                body.reason,
                user=cw.caseworker_id,
                transaction_id=_tx(request),
                day=hub.today(),
            )
        except SignalNotActive:
            raise Problem(
                409, "Signaal niet actief", "Dit signaal is al ingetrokken, beëindigd of verlopen."
            ) from None
        row = await signal_row(session, signal_id)
    hub.relay.wake()
    return SignalOut.of(row, hub.today())


@router.patch("/{signal_id}/contactpersoon", response_model=SignalOut)
async def change_contact(
    signal_id: str, body: ContactIn, request: Request, cw: CurrentCaseworker
) -> SignalOut:
    """Make another caseworker the signal's contact person; the Verwijsindex is told."""
    hub = _hub(request)
    assert hub.store is not None and hub.relay is not None
    async with (
        _refused(request, cw, "signal.contact_change_refused", signal_id),
        hub.store.transaction() as session,
    ):
        await _own_row(hub, session, signal_id, cw)
        try:
            new = await get_caseworker(session, body.caseworker_id)
        except CaseworkerNotFound:
            new = None
        if new is None or not new.active:
            bad = [InvalidParam(name="caseworker_id", reason="onbekend of niet actief")]
            raise Problem(422, "Onbekende medewerker", "De nieuwe contactpersoon is onbekend.", params=bad)
        if not new.meldingsbevoegd:  # rule 13: the index shows the contact person as the one who signals
            raise Problem(
                422,
                "Niet meldingsbevoegd",
                "Alleen een meldingsbevoegde medewerker kan contactpersoon van een signaal zijn (regel 13).",
                params=[InvalidParam(name="caseworker_id", reason="niet meldingsbevoegd")],
            )
        if (problem := rules.phone_problem(new.phone)) is not None:
            raise _phone_unfit("caseworker_id", problem)
        try:
            await request_contact_change(
                session, hub, signal_id, new, _tx(request), user=cw.caseworker_id, day=hub.today()
            )
        except SignalNotActive:
            raise Problem(
                409, "Signaal niet actief", "Dit signaal is al ingetrokken, beëindigd of verlopen."
            ) from None
        row = await signal_row(session, signal_id)
    hub.relay.wake()
    return SignalOut.of(row, hub.today())


class MatchOut(Match):
    """A match on the signal as the Verwijsindex reported it, and whom its mail reached when."""

    received_at: datetime = Field(description="when the hub read it from the index's feed")


@router.get("/{signal_id}/matches", response_model=list[MatchOut])
async def signal_matches(signal_id: str, request: Request, cw: CurrentCaseworker) -> list[MatchOut]:
    """The signal's matches, oldest first: the counterparts' contact details (what the match mail
    showed, rule 16), and when and to whom the mail went (`notified_at` empty: not sent yet, or
    nobody could be told; the problems list says why). Once the signal is over (withdrawn, ended,
    past its end date), only the matches that were mailed: one nobody was told of stays untold, as
    the notifier and the mail connector decide. An audited read naming the matches shown."""
    hub = _hub(request)
    assert hub.store is not None
    async with (
        _refused(request, cw, "signal.matches_read_refused", signal_id),
        hub.store.transaction() as session,
    ):
        row = await _own_row(hub, session, signal_id, cw)
        query = select(matches).where(matches.c.signal_id == signal_id)
        if ended_status(row.status, row.end_date, hub.today()) is not None:
            query = query.where(matches.c.notified_at.is_not(None))
        rows = (await session.execute(query.order_by(matches.c.received_at, matches.c.match_id))).all()
        entry = AuditEntry(
            action="signal.matches_read",
            user=cw.caseworker_id,
            youth_key=row.youth_key,
            objects={"signal_id": signal_id, "match_ids": [r.match_id for r in rows]},
        )
        await write_audit(session, entry, transaction_id=_tx(request), system=SYSTEM)
    return [
        MatchOut(
            match_id=r.match_id,
            signal_id=r.signal_id,
            type=r.type,
            counterparts=r.counterparts,
            notified_caseworker=r.notified_caseworker_id,
            notified_at=aware(r.notified_at) if r.notified_at is not None else None,
            received_at=aware(r.received_at),
        )
        for r in rows
    ]


@router.get("/{signal_id}/ouderbrief", response_class=Response)
async def parent_letter(signal_id: str, request: Request, cw: CurrentCaseworker) -> Response:
    """The letter "aanmelding verwijsindex aan ouder": HTML, or PDF on `Accept: application/pdf`."""
    row = await _read(request, signal_id, cw, "signal.parent_letter")
    hub = _hub(request)
    return await letter_response(row, hub.settings, request.headers.get("accept", ""), day=hub.today())
