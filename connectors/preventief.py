"""Preventive referrals (JSON over HTTP from wijkteam, jongerenwerk, school, wijkagent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from schemas.partners._common import (
    full_surname,
    gender_of,
    load_json_object,
    reference_in,
    to_canonical,
    translate,
    validate_partner,
)
from schemas.partners.preventief import Ouder, PreventiefAanmelding
from schemas.referral import (
    Guardian,
    GuardianRelation,
    Offence,
    Reason,
    Referral,
    Referrer,
    ReferrerType,
    Track,
    Youth,
)

REFERRER_TYPE: Final = ReferrerType.PREVENTIEF
SAMPLE_DIR: Final = "preventief"
CASE_REFERENCE_FIELD: Final = "aanmeldnummer"

# The preventive referral's own field for each canonical field a reason of intake may name
# (DecisionReason.field, hub.intake.rules.ReasonField): the path `parse` reads it from, as a format
# error names it; the HTTP answers name it beside the canonical field (hub.intake.partner_fields).
# Without a preventive equivalent: the offence's feitcode, confessed, the OvJ's approval, damage and
# truancy (a preventive referral states none of them).
DECISION_FIELDS: Final[Mapping[str, str]] = {
    "case_reference": CASE_REFERENCE_FIELD,
    "youth.birth_date": "jongere.geboortedatum",
    "offence.committed_on": "aanleiding.datum",
    "youth_agreed": "jongereAkkoord",
    "parents_agreed": "oudersAkkoord",
}

REASONS: Final[dict[str, Reason]] = {
    "overlast": Reason.BALDADIG_OVERLAST,
    "fysieke-agressie": Reason.FYSIEKE_AGRESSIE,
    "verbale-agressie": Reason.VERBALE_AGRESSIE,
    "diefstal": Reason.DIEFSTAL,
    "vernieling": Reason.VERNIELING,
    "online": Reason.DIGITAAL_GRENSOVERSCHRIJDEND,
    "schoolverzuim": Reason.SCHOOLVERZUIM,
    "vuurwerk": Reason.VUURWERK,
    "middelen": Reason.ALCOHOL_DRUGS,
    "anders": Reason.OVERIG,
}
_RELATIONS = {
    "voogd": GuardianRelation.VOOGD,
    "pleegouder": GuardianRelation.PLEEGOUDER,
    "anders": GuardianRelation.OVERIG,
}


def parse(raw: bytes) -> Referral:
    """Parse one preventive referral; raises PartnerFormatError naming each wrong field."""
    return translate(to_referral, validate_partner(PreventiefAanmelding, load_json_object(raw)))


def case_reference_of(raw: bytes) -> str | None:
    """The referrer's registration number, when it can be read even though parsing fails."""
    return reference_in(raw, CASE_REFERENCE_FIELD)


def _guardian(o: Ouder) -> Guardian:
    relation = _RELATIONS.get(o.relatie, GuardianRelation.OUDER)
    return Guardian(name=o.naam, relation=relation, has_custody=o.gezag, phone=o.telefoon, email=o.email)


def to_referral(record: PreventiefAanmelding) -> Referral:
    """Translate a validated preventive referral into the canonical Referral."""
    j, v = record.jongere, record.verwijzer
    return to_canonical(
        Referral,
        referrer=Referrer(
            type=REFERRER_TYPE,
            organisation=v.organisatie,
            unit=v.soort,
            officer_name=v.naam,
            email=v.email,
            phone=v.telefoon,
        ),
        case_reference=record.aanmeldnummer,
        youth=Youth(
            bsn=j.bsn,
            given_names=j.voornamen,
            surname=full_surname(j.tussenvoegsel, j.achternaam),
            birth_date=j.geboortedatum,
            gender=gender_of(j.geslacht),
            municipality=j.gemeente,
            guardians=[_guardian(o) for o in record.ouders],
        ),
        track=Track.PREVENTIEF,
        offence=Offence(
            committed_on=record.aanleiding.datum,
            municipality=record.aanleiding.plaats,
            description=record.aanleiding.omschrijving,
        ),
        reason=REASONS[record.aanleiding.categorie],
        youth_agreed=record.jongere_akkoord,
        parents_agreed=record.ouders_akkoord,
        parents_informed_at=record.ouders_geinformeerd_op,
    )
