"""The bodies of the consent endpoints: a consent as a caseworker records it and as they see it
(no BSN; complete per rule 8, and if not, why), and a withdrawal's reason."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import Field

from hub.consent.rules import completeness, explain
from hub.consent.store import StoredConsent
from schemas._base import CanonicalModel, Code, ShortText
from schemas.consent import (
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Custodians,
    DataCategory,
    Grantor,
    GrantorIn,
)


class ConsentIn(CanonicalModel):
    """A consent as a caseworker records it; the youth by referral id (or, once known, youth key)."""

    referral_id: Code | None = None
    youth_key: Code | None = None
    purpose: ConsentPurpose
    recipient_organisations: list[Code] = Field(min_length=1)
    data_categories: list[DataCategory] = Field(min_length=1)
    grantors: list[GrantorIn] = Field(min_length=1)
    valid_from: date
    valid_until: date
    custodians: Custodians | None = None


class Withdrawal(CanonicalModel):
    """Why a consent is withdrawn."""

    reason: ShortText


def effective_status(consent: Consent, today: date) -> ConsentStatus:
    """The consent's status on `today` (the Dutch day): an ACTIEF consent past its last day is
    VERLOPEN, as the handover check treats it (rule 9), though nothing rewrote its stored status."""
    if consent.status is ConsentStatus.ACTIEF and today > consent.valid_until:
        return ConsentStatus.VERLOPEN
    return consent.status


class ConsentOut(CanonicalModel):
    """A consent as the caseworker sees it: no BSN, the youth by key; complete per rule 8, and if
    not, why (`missing`, `denied`, `incomplete_reason`)."""

    consent_id: str
    youth_key: str
    referral_id: str | None
    purpose: ConsentPurpose
    recipient_organisations: list[str]
    data_categories: list[DataCategory]
    grantors: list[Grantor]
    recorded_by: str
    valid_from: date
    valid_until: date
    status: ConsentStatus
    custodians: int | None = Field(
        description="the number of custodians stated when the consent was recorded; null: not stated"
    )
    custodians_needed: int | None = Field(
        description="how many custodians must permit (rule 8): the number stated, or more when the "
        "youth's referral names more; null when no custodian's permit is asked for, or the number "
        "was not stated"
    )
    complete: bool
    missing: list[str] = Field(
        description="each missing permit by role (a role once per missing permit), and "
        "AANTAL_GEZAGHEBBERS when the custodians' permits are asked for but their number was not stated"
    )
    denied: list[str]
    incomplete_reason: str | None = Field(description="why the consent is not complete; null when it is")
    recorded_at: datetime
    withdrawn_at: datetime | None = None
    withdrawal_reason: str | None = None
    handovers_sent: list[str] = Field(default_factory=list)
    handovers_withdrawn: list[str] = Field(default_factory=list)
    handovers_kept: list[str] = Field(
        default_factory=list,
        description="on a withdrawal: waiting handovers another of the youth's consents covers, or will"
        " from its first day; they wait for that one",
    )

    @classmethod
    def of(cls, s: StoredConsent, named: int, today: date, **extra: Any) -> ConsentOut:
        """From the stored consent, as it stands `today` (the Dutch day): an ACTIEF consent past its
        last day is VERLOPEN, as the handover check treats it (rule 9); `named` is what
        `hub.consent.custody.named_for` says of its youth, as for the handover check."""
        c, check = s.consent, completeness(s.consent, named=named)
        status = effective_status(c, today)
        return cls(
            consent_id=s.consent_id,
            youth_key=s.youth_key,
            referral_id=s.referral_id,
            purpose=c.purpose,
            recipient_organisations=c.recipient_organisations,
            data_categories=c.data_categories,
            grantors=c.grantors,
            recorded_by=c.recorded_by,
            valid_from=c.valid_from,
            valid_until=c.valid_until,
            status=status,
            custodians=c.custodians,
            custodians_needed=check.custodians_needed,
            complete=check.complete,
            missing=list(check.missing),
            denied=[d.value for d in check.denied],
            incomplete_reason=explain(check),
            recorded_at=s.recorded_at,
            withdrawn_at=s.withdrawn_at,
            withdrawal_reason=s.withdrawal_reason,
            **extra,
        )
