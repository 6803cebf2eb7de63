"""Minimisation: a handover message carries only the data categories the consent covers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from schemas.consent import DataCategory
from schemas.referral import Referral


def _personalia(r: Referral) -> dict[str, Any]:
    y = r.youth
    return {
        "bsn": y.bsn,
        "given_names": y.given_names,
        "surname": y.surname,
        "birth_date": y.birth_date.isoformat(),
        "gender": y.gender.value,
    }


def _contact(r: Referral) -> dict[str, Any]:
    return {"municipality": r.youth.municipality}


def _referral(r: Referral) -> dict[str, Any]:
    return {
        "referrer_type": r.referrer.type.value,
        "referrer_organisation": r.referrer.organisation,
        "track": r.track.value,
        "reason": r.reason.value if r.reason else None,
        "prior_halt_referrals": r.prior_halt_referrals,
    }


def _offence(r: Referral) -> dict[str, Any] | None:
    if r.offence is None:
        return None
    out: dict[str, Any] = r.offence.model_dump(mode="json")
    if r.damage is not None:
        out["damage"] = r.damage.model_dump(mode="json")
    return out


def _school(r: Referral) -> dict[str, Any] | None:
    return r.truancy.model_dump(mode="json") if r.truancy else None


def _family(r: Referral) -> dict[str, Any]:
    return {"guardians": [g.model_dump(mode="json") for g in r.youth.guardians]}


# What each category means in a referral. HULPVRAAG is the caseworker's own summary, not part of the
# referral: every handover asks for it and it travels where a consent covers it (hub.handovers);
# the screening result (SIGNALERINGSINSTRUMENT) is not part of a referral.
EXTRACTORS: dict[DataCategory, Callable[[Referral], dict[str, Any] | None]] = {
    DataCategory.PERSONALIA: _personalia,
    DataCategory.CONTACTGEGEVENS: _contact,
    DataCategory.VERWIJZING: _referral,
    DataCategory.DELICT: _offence,
    DataCategory.SCHOOL: _school,
    DataCategory.GEZIN: _family,
}


def minimise(
    referral: Referral, shared: Iterable[DataCategory], covered: Iterable[DataCategory]
) -> dict[str, Any]:
    """The referral's data for the categories both asked for and covered; nothing else is in it."""
    allowed = set(shared) & set(covered)
    out: dict[str, Any] = {}
    for category in sorted(allowed):
        extract = EXTRACTORS.get(category)
        value = extract(referral) if extract else None
        if value is not None:
            out[category.value] = value
    return out
