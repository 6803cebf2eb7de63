"""Rules 8, 9 and 10 as pure functions over canonical consents, handovers and a day."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from hub.clock import local_day
from schemas.consent import Consent, ConsentPurpose, ConsentStatus, DataCategory, GrantorRole, Permission
from schemas.dates import age_on
from schemas.handover import HandoverStatus

CUSTODY_ROLES = frozenset({GrantorRole.OUDER_MET_GEZAG, GrantorRole.VOOGD})


def consent_day(consent: Consent) -> date:
    """The day of consent: the day the last permit was given, when the consent came about. A refusal
    does not bring a consent about: a parent's refusal two days after a 15-year-old's permit moved the
    day past the 16th birthday, where the refusal no longer counts, and made the consent complete.
    Without any permit, the day of the last answer."""
    permits = [g for g in consent.grantors if g.permission is Permission.PERMIT] or consent.grantors
    return max(local_day(g.given_at) for g in permits)


class Required(StrEnum):
    """Whose permit rule 8 asks for."""

    JEUGDIGE = "JEUGDIGE"
    GEZAGHEBBERS = "GEZAGHEBBERS"  # every parent or guardian with custody


def required_for(age: int) -> frozenset[Required]:
    """Rule 8: under 12 the custodians; 12-15 the youth and the custodians; 16 and over the youth."""
    if age < 12:
        return frozenset({Required.GEZAGHEBBERS})
    if age < 16:
        return frozenset({Required.JEUGDIGE, Required.GEZAGHEBBERS})
    return frozenset({Required.JEUGDIGE})


@dataclass(frozen=True)
class Completeness:
    """Whether the right people permitted (rule 8), and if not, who is missing or denied."""

    day: date
    age: int
    required: frozenset[Required]
    missing: tuple[str, ...] = ()
    denied: tuple[GrantorRole, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every required permit is there and nobody denied."""
        return not self.missing and not self.denied


def completeness(consent: Consent, *, custodians: int | None = None) -> Completeness:
    """Rule 8 on the day of consent; `custodians` is how many hold custody, when the referral says.

    One missing permit, or a deny by anyone whose permit is asked for, means no consent. Without a
    known number of custodians, one custodian's permit counts as the custodians' permit.
    """
    day = consent_day(consent)
    age = age_on(consent.youth.birth_date, day)
    required = required_for(age)
    # Only a refusal by someone whose permit rule 8 asks for counts: at 16 the youth decides alone,
    # under 12 the custodians do.
    asked = {GrantorRole.JEUGDIGE} if Required.JEUGDIGE in required else set()
    if Required.GEZAGHEBBERS in required:
        asked |= CUSTODY_ROLES
    denied = tuple(g.role for g in consent.grantors if g.permission is Permission.DENY and g.role in asked)
    permits = [g for g in consent.grantors if g.permission is Permission.PERMIT]
    missing: list[str] = []
    if Required.JEUGDIGE in required and not any(g.role is GrantorRole.JEUGDIGE for g in permits):
        missing.append(GrantorRole.JEUGDIGE.value)
    if Required.GEZAGHEBBERS in required:
        have = len({g.name.casefold() for g in permits if g.role in CUSTODY_ROLES})
        need = max(custodians or 0, 1)
        missing += [GrantorRole.OUDER_MET_GEZAG.value] * max(need - have, 0)
    return Completeness(day, age, required, tuple(missing), denied)


class Gap(StrEnum):
    """Why a consent does not cover a disclosure (rule 9)."""

    INGETROKKEN = "INGETROKKEN"
    VERLOPEN = "VERLOPEN"
    NOG_NIET_GELDIG = "NOG_NIET_GELDIG"
    ANDER_DOEL = "ANDER_DOEL"
    ANDERE_ONTVANGER = "ANDERE_ONTVANGER"
    CATEGORIE_NIET_GEDEKT = "CATEGORIE_NIET_GEDEKT"
    ONVOLLEDIG = "ONVOLLEDIG"


@dataclass(frozen=True)
class Disclosure:
    """What is to be disclosed: for which purpose, to whom, which categories, on which day."""

    purpose: ConsentPurpose
    receiver: str
    categories: frozenset[DataCategory]
    day: date


@dataclass(frozen=True)
class Coverage:
    """The verdict of one consent on one disclosure."""

    consent_id: str | None
    gaps: tuple[Gap, ...] = ()
    uncovered: frozenset[DataCategory] = field(default_factory=frozenset)

    @property
    def covers(self) -> bool:
        """True when nothing is missing."""
        return not self.gaps


def coverage(consent: Consent, disclosure: Disclosure, *, custodians: int | None = None) -> Coverage:
    """Rule 9: ACTIEF, valid on the day, its purpose, its receiver, every category, and complete."""
    gaps: list[Gap] = []
    if consent.status is ConsentStatus.INGETROKKEN:
        gaps.append(Gap.INGETROKKEN)
    elif consent.status is ConsentStatus.VERLOPEN or disclosure.day > consent.valid_until:
        gaps.append(Gap.VERLOPEN)
    if disclosure.day < consent.valid_from:
        gaps.append(Gap.NOG_NIET_GELDIG)
    if consent.purpose is not disclosure.purpose:
        gaps.append(Gap.ANDER_DOEL)
    if disclosure.receiver not in consent.recipient_organisations:
        gaps.append(Gap.ANDERE_ONTVANGER)
    uncovered = disclosure.categories - set(consent.data_categories)
    if uncovered:
        gaps.append(Gap.CATEGORIE_NIET_GEDEKT)
    if not completeness(consent, custodians=custodians).complete:
        gaps.append(Gap.ONVOLLEDIG)
    return Coverage(consent.consent_id, tuple(gaps), frozenset(uncovered))


def find_covering(
    consents: Iterable[Consent], disclosure: Disclosure, *, custodians: int | None = None
) -> tuple[Consent | None, list[Coverage]]:
    """The consent that covers the disclosure (the one valid longest), and every verdict."""
    verdicts = [(c, coverage(c, disclosure, custodians=custodians)) for c in consents]
    covering = [c for c, v in verdicts if v.covers]
    best = max(covering, key=lambda c: c.valid_until) if covering else None
    return best, [v for _, v in verdicts]


# Rule 10 --------------------------------------------------------------------------------------
OPEN = frozenset({HandoverStatus.WACHT_OP_TOESTEMMING})
DISCLOSED = frozenset(
    {
        HandoverStatus.VERZONDEN,
        HandoverStatus.ONTVANGEN,
        HandoverStatus.GEACCEPTEERD,
        HandoverStatus.GEWEIGERD,
    }
)


@dataclass(frozen=True)
class HandoverView:
    """What rule 10 needs to know of a handover."""

    handover_id: str
    receiver: str
    purpose: ConsentPurpose
    status: HandoverStatus
    consent_id: str | None


@dataclass(frozen=True)
class WithdrawalEffects:
    """What a withdrawal does: handovers to withdraw, and receivers to tell (they got data)."""

    withdraw: tuple[str, ...]
    tell: tuple[tuple[str, str], ...]  # (handover id, receiver)


def withdrawal_effects(consent: Consent, handovers: Sequence[HandoverView]) -> WithdrawalEffects:
    """Rule 10: handovers sent under this consent are withdrawn and their receivers told; handovers
    still waiting for a consent to these receivers for this purpose are withdrawn too."""
    withdraw: list[str] = []
    tell: list[tuple[str, str]] = []
    for h in handovers:
        if h.status in DISCLOSED and h.consent_id == consent.consent_id:
            withdraw.append(h.handover_id)
            tell.append((h.handover_id, h.receiver))
        elif (
            h.status in OPEN
            and h.purpose is consent.purpose
            and h.receiver in consent.recipient_organisations
        ):
            withdraw.append(h.handover_id)
    return WithdrawalEffects(tuple(withdraw), tuple(tell))
