"""BOA referrals (JSON from the handheld app over HTTP) translated into Referrals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from hub.clock import local_day
from schemas.partners._common import (
    full_surname,
    gender_of,
    load_json_object,
    reference_in,
    to_canonical,
    translate,
    validate_partner,
)
from schemas.partners.boa import BoaVerwijzing
from schemas.referral import Damage, Guardian, Offence, Referral, Referrer, ReferrerType, Track, Youth

REFERRER_TYPE: Final = ReferrerType.BOA
SAMPLE_DIR: Final = "boa"
CASE_REFERENCE_FIELD: Final = "bonnummer"

# The BOA record's own field for each canonical field a reason of intake may name
# (DecisionReason.field, hub.intake.rules.ReasonField): the path `parse` reads it from, as a format
# error names it; the HTTP answers name it beside the canonical field (hub.intake.partner_fields).
# The offence date is the Dutch day of `tijdstip`; the one `schadebedrag` is both the youth's share
# and the case total. Without a BOA equivalent: "ovj_approval" (the app records no approval of the
# OvJ) and the truancy fields.
DECISION_FIELDS: Final[Mapping[str, str]] = {
    "case_reference": CASE_REFERENCE_FIELD,
    "youth.birth_date": "betrokkene.geboortedatum",
    "offence.committed_on": "tijdstip",
    "offence.feitcode": "feitcode",
    "confessed": "bekend",
    "youth_agreed": "akkoordJeugdige",
    "parents_agreed": "akkoordOuders",
    "damage.youth_share": "schadebedrag",
    "damage.case_total": "schadebedrag",
    "boa_project": "projectcode",
}


def parse(raw: bytes) -> Referral:
    """Parse one handheld-app referral; raises PartnerFormatError naming each wrong field."""
    return translate(to_referral, validate_partner(BoaVerwijzing, load_json_object(raw)))


def case_reference_of(raw: bytes) -> str | None:
    """The ticket number of a referral, when it can be read even though parsing fails."""
    return reference_in(raw, CASE_REFERENCE_FIELD)


def to_referral(record: BoaVerwijzing) -> Referral:
    """Translate a validated BOA referral into the canonical Referral."""
    b, h = record.betrokkene, record.handhaver
    guardians = []
    if record.ouder is not None:
        o = record.ouder
        guardians.append(Guardian(name=o.naam, has_custody=o.gezag, phone=o.telefoon, email=o.email))
    damage = None
    if record.schadebedrag is not None:
        damage = Damage(youth_share=record.schadebedrag, case_total=record.schadebedrag)
    return to_canonical(
        Referral,
        referrer=Referrer(
            type=REFERRER_TYPE,
            organisation=h.organisatie,
            officer_name=h.naam,
            officer_id=h.boa_nummer,
            email=h.email,
            phone=h.telefoon,
        ),
        case_reference=record.bonnummer,
        youth=Youth(
            bsn=b.bsn,
            given_names=b.voornaam,
            surname=full_surname(b.tussenvoegsel, b.achternaam),
            birth_date=b.geboortedatum,
            gender=gender_of(b.geslacht),
            municipality=b.woonplaats,
            guardians=guardians,
        ),
        track=Track.HALT_STRAF,
        # The app records a moment with its offset (UTC from some devices); the offence date is
        # the Dutch calendar day of that moment, the day the rules count age and projects on.
        offence=Offence(
            committed_on=local_day(record.tijdstip),
            feitcode=record.feitcode,
            municipality=record.locatie.gemeente,
            description=record.feitomschrijving,
        ),
        damage=damage,
        confessed=record.bekend,
        youth_agreed=record.akkoord_jeugdige,
        parents_agreed=record.akkoord_ouders,
        parents_informed_at=record.ouders_geinformeerd_op,
        boa_project=record.projectcode,
    )
