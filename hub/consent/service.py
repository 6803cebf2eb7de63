"""Recording and withdrawing consents, with their effects on handovers in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from hub.audit import AuditEntry, write_audit
from hub.clock import local_day
from hub.consent.custody import named_for
from hub.consent.rules import Required, completeness, custodians_shown
from hub.consent.store import (
    StoredConsent,
    active_twin,
    get_consent,
    insert_consent,
    mark_withdrawn,
)
from hub.handovers.service import Act, Routing, apply_withdrawal, recheck_waiting
from hub.store.locks import lock_youths
from schemas.consent import Consent, ConsentStatus


@dataclass(frozen=True)
class Recorded:
    """A recorded consent and the waiting handovers it set off."""

    stored: StoredConsent
    sent: list[str]
    named: int  # the custodians the youth's referral names, as rule 8 counted them


class TooFewCustodians(Exception):
    """The number of custodians stated is below the number the referral names or the consent itself
    records as holding custody: rule 8 would count too few permits."""

    def __init__(self, stated: int, shown: int, named: int) -> None:
        super().__init__(f"{stated} custodians stated, at least {shown} shown")
        self.stated, self.shown, self.named = stated, shown, named


class SameAsActive(Exception):
    """The youth has an ACTIEF consent that is this one in substance (`hub.consent.store.substance`):
    a second would cover what the first covers, and outlive a withdrawal of the first (rule 10)."""

    def __init__(self, consent_id: str) -> None:
        super().__init__(consent_id)
        self.consent_id = consent_id


async def record_consent(
    session: AsyncSession,
    r: Routing,
    consent: Consent,
    act: Act,
    *,
    youth_key: str,
    referral_id: str | None,
) -> Recorded:
    """Check the number of custodians stated, store, audit, and send the youth's waiting handovers
    that this consent now covers. A consent the youth already has in force, the same in substance,
    is not stored again: `SameAsActive` names it. The caller holds the youth's case lock."""
    named = await named_for(session, youth_key)
    check = completeness(consent, named=named)
    shown = custodians_shown(consent, named=named)
    # only where rule 8 asks for the custodians (under 16): at 16 the number decides nothing
    asked = Required.GEZAGHEBBERS in check.required
    if asked and consent.custodians is not None and consent.custodians < shown:
        raise TooFewCustodians(consent.custodians, shown, named)
    if (twin := await active_twin(session, youth_key, consent, local_day(r.clock()))) is not None:
        raise SameAsActive(twin.consent_id)
    stored = await insert_consent(
        session, consent, youth_key=youth_key, referral_id=referral_id, transaction_id=act.transaction_id
    )
    await write_audit(
        session,
        AuditEntry(
            action="consent.recorded",
            user=act.user,
            youth_key=youth_key,
            on_behalf_of=act.on_behalf_of,
            objects={
                "consent_id": stored.consent_id,
                "purpose": consent.purpose.value,
                "recipients": consent.recipient_organisations,
                "categories": [c.value for c in consent.data_categories],
                "custodians": consent.custodians,
                "complete": check.complete,
            },
        ),
        transaction_id=act.transaction_id,
        system=r.system,
    )
    sent = await recheck_waiting(session, r, youth_key, act)
    return Recorded(stored, sent, named)


class ConsentNotFound(Exception):
    """No consent with this id."""


class AlreadyWithdrawn(Exception):
    """The consent is no longer ACTIEF."""


async def withdraw_consent(
    session: AsyncSession, r: Routing, consent_id: str, reason: str, act: Act
) -> tuple[StoredConsent, list[str], list[str]]:
    """Rule 10: block new disclosures at once, withdraw pending handovers, tell receivers, audit;
    returns the consent, the handovers withdrawn and the waiting ones kept for another consent.

    Under the youth's case lock, taken before the consent's row (hub.store.locks): two withdrawals
    of two of the youth's consents at once take turns, and the second sees what the first withdrew
    (a handover both name is withdrawn, and its receiver told, once); so do a delivery's last check
    (`hold_for_delivery`) and routing."""
    found = await get_consent(session, consent_id)
    if found is None:
        raise ConsentNotFound(consent_id)
    await lock_youths(session, [found.youth_key])
    stored = await get_consent(session, consent_id, lock=True)  # two withdrawals at once: in turn
    if stored is None:
        raise ConsentNotFound(consent_id)
    if stored.consent.status is not ConsentStatus.ACTIEF:
        raise AlreadyWithdrawn(consent_id)
    stored = await mark_withdrawn(session, stored, by=act.user, reason=reason)
    withdrawn, kept = await apply_withdrawal(session, r, stored, act)
    await write_audit(
        session,
        AuditEntry(
            action="consent.withdrawn",
            user=act.user,
            youth_key=stored.youth_key,
            on_behalf_of=act.on_behalf_of,
            # Rule 18: the reason is free text (it may name the youth, a parent, a BSN) and the audit
            # log is kept for years: only its length goes in; the text stays on the consent
            # (consents.withdrawal_reason), shown by the API to whom it is allowed.
            objects={
                "consent_id": consent_id,
                "reason_length": len(reason),
                "handovers_withdrawn": withdrawn,
                # waiting handovers another of the youth's consents names: they wait for that one
                "handovers_kept": kept,
            },
        ),
        transaction_id=act.transaction_id,
        system=r.system,
    )
    return stored, withdrawn, kept
