"""Police referrals (JSON on partner.politie.referral.v1 or HTTP) translated into Referrals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from schemas.bsn import is_valid_bsn, normalise_bsn
from schemas.partners._common import (
    full_surname,
    gender_of,
    load_json_object,
    reference_in,
    to_canonical,
    translate,
    validate_partner,
)
from schemas.partners.politie import ORGANISATION_PREFIX, PolitieVerwijzing, Vertegenwoordiger
from schemas.referral import (
    Damage,
    Guardian,
    GuardianRelation,
    Offence,
    Referral,
    Referrer,
    ReferrerType,
    Track,
    Youth,
)

REFERRER_TYPE: Final = ReferrerType.POLITIE
SAMPLE_DIR: Final = "politie"
CASE_REFERENCE_FIELD: Final = "procesVerbaalNummer"

# The police record's own field for each canonical field a reason of intake may name
# (DecisionReason.field, hub.intake.rules.ReasonField): the path `parse` reads it from, as a format
# error names it. The answer on partner.politie.decision.v1 names these, and the HTTP answers beside
# the canonical field (hub.intake.partner_fields). Without a police equivalent: "truancy" and
# "truancy.period_end" (a police referral is never a truancy referral) and "boa_project" (nor a
# BOA's), which the decision answer names as they are. Without bedragTotaal the case total is the
# youth's share (to_referral); a refusal on it still names schade.bedragTotaal, where the police
# would state the case total.
DECISION_FIELDS: Final[Mapping[str, str]] = {
    "case_reference": CASE_REFERENCE_FIELD,
    "youth.birth_date": "verdachte.geboortedatum",
    "offence.committed_on": "pleegdatum",
    "offence.feitcode": "feitcode",
    "confessed": "bekennend",
    "youth_agreed": "jeugdigeAkkoord",
    "parents_agreed": "oudersAkkoord",
    "ovj_approval": "ovjToestemming",
    "damage.youth_share": "schade.bedragJeugdige",
    "damage.case_total": "schade.bedragTotaal",
}

_RELATIONS = {
    "voogd": GuardianRelation.VOOGD,
    "pleegouder": GuardianRelation.PLEEGOUDER,
    "anders": GuardianRelation.OVERIG,
}


def parse(raw: bytes) -> Referral:
    """Parse one police record; raises PartnerFormatError naming each wrong field."""
    return translate(to_referral, validate_partner(PolitieVerwijzing, load_json_object(raw)))


def case_reference_of(raw: bytes) -> str | None:
    """The proces-verbaal number of a record, when it can be read even though parsing fails."""
    return reference_in(raw, CASE_REFERENCE_FIELD)


def bsn_of(raw: bytes) -> str | None:
    """The suspect's BSN, when it can be read and is one (elfproef) even though parsing fails."""
    found = reference_in(raw, "verdachte", "bsn")
    return normalise_bsn(found) if found is not None and is_valid_bsn(found) else None


def _guardian(v: Vertegenwoordiger) -> Guardian:
    relation = _RELATIONS.get(v.relatie, GuardianRelation.OUDER)
    return Guardian(name=v.naam, relation=relation, has_custody=v.gezag, phone=v.telefoon, email=v.email)


def to_referral(record: PolitieVerwijzing) -> Referral:
    """Translate a validated police record into the canonical Referral."""
    v = record.verdachte
    damage = None
    if record.schade is not None:
        total = record.schade.bedrag_totaal
        damage = Damage(
            youth_share=record.schade.bedrag_jeugdige,
            case_total=record.schade.bedrag_jeugdige if total is None else total,
        )
    return to_canonical(
        Referral,
        referrer=Referrer(
            type=REFERRER_TYPE,
            organisation=f"{ORGANISATION_PREFIX}{record.eenheid}",
            unit=record.basisteam,
            officer_name=record.verbalisant.naam,
            officer_id=record.verbalisant.dienstnummer,
            email=record.verbalisant.email,
            phone=record.verbalisant.telefoon,
        ),
        case_reference=record.proces_verbaal_nummer,
        youth=Youth(
            bsn=v.bsn,
            given_names=v.voornamen,
            surname=full_surname(v.voorvoegsel, v.achternaam),
            birth_date=v.geboortedatum,
            gender=gender_of(v.geslacht),
            municipality=v.gemeente,
            guardians=[_guardian(g) for g in record.wettelijk_vertegenwoordigers],
        ),
        track=Track.HALT_STRAF,
        offence=Offence(
            committed_on=record.pleegdatum,
            feitcode=record.feitcode,
            article=record.wetsartikel,
            municipality=record.pleegplaats,
            description=record.omschrijving,
        ),
        damage=damage,
        confessed=record.bekennend,
        youth_agreed=record.jeugdige_akkoord,
        parents_agreed=record.ouders_akkoord,
        parents_informed_at=record.ouders_geinformeerd_op,
        prior_halt_referrals=record.eerdere_haltverwijzingen,
        ovj_approval=record.ovj_toestemming,
    )
