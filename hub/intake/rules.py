"""The pure intake decision on a Referral: rules 2-6 of DOMAIN.md (rule 1 is in the Bsn type)."""

from __future__ import annotations

import re
from datetime import date
from typing import Final, Literal, get_args

from hub import clock
from hub.intake.config import HaltFeit, IntakeRules
from schemas.dates import age_on
from schemas.referral import Decision, DecisionReason, Outcome, Reason, Referral, ReferrerType, Track


def normalise_article(article: str) -> str:
    """'Art. 453 Sr' and 'artikel 453 sr' both become '453sr'."""
    text = article.lower().replace("artikel", "").replace("art.", "").replace("art", "")
    return re.sub(r"[\s.]", "", text)


# Every canonical field a reason of intake names: the rules below and rule 7's conflict
# (hub/intake/service.py). A partner's answers name its own field too (instead, on the police's
# decision topic; beside these, over HTTP), through a mapping beside its parser (DECISION_FIELDS in
# connectors/<partner>.py, looked up in hub/intake/partner_fields.py); the decision keeps these names.
ReasonField = Literal[
    "case_reference",
    "youth.birth_date",
    "offence.committed_on",
    "offence.feitcode",
    "truancy",
    "truancy.period_end",
    "confessed",
    "youth_agreed",
    "parents_agreed",
    "ovj_approval",
    "damage.youth_share",
    "damage.case_total",
    "boa_project",
]
REASON_FIELDS: Final[frozenset[str]] = frozenset(get_args(ReasonField))


def _reason(code: str, message: str, field: ReasonField | None = None) -> DecisionReason:
    return DecisionReason(code=code, message=message, field=field)


def _check_not_ahead(referral: Referral, today: date) -> list[DecisionReason]:
    # Every date rule counts from this day: one still to come (a typing error) would pass an age
    # the youth does not have yet.
    if referral.offence_date <= today:
        return []
    field: ReasonField
    if referral.truancy is not None:
        what, field = "De laatste verzuimdag ('Verzuim tot en met')", "truancy.period_end"
    elif referral.track is Track.PREVENTIEF:
        what, field = "De datum van de aanleiding", "offence.committed_on"
    else:
        what, field = "De pleegdatum", "offence.committed_on"
    return [
        _reason(
            "DATUM_IN_TOEKOMST",
            f"{what} ligt na vandaag ({today:%d-%m-%Y}); controleer de datum.",
            field,
        )
    ]


def _check_age(referral: Referral, rules: IntakeRules) -> list[DecisionReason]:
    bounds = rules.age_ranges[referral.track]
    age = age_on(referral.youth.birth_date, referral.offence_date)
    if bounds.min_age <= age <= bounds.max_age:
        return []
    return [
        _reason(
            "LEEFTIJD_BUITEN_BEREIK",
            f"De jongere was {age} jaar op de pleegdatum; voor {referral.track.value} geldt "
            f"{bounds.min_age} tot en met {bounds.max_age} jaar.",
            "youth.birth_date",
        )
    ]


def _check_halt_straf_consent(referral: Referral) -> list[DecisionReason]:
    reasons = []
    if referral.confessed is not True:
        reasons.append(
            _reason("NIET_BEKEND", "Een Halt-straf vraagt dat de jongere het feit bekent.", "confessed")
        )
    if referral.youth_agreed is not True:
        reasons.append(
            _reason(
                "JEUGDIGE_NIET_AKKOORD",
                "Een Halt-straf vraagt dat de jongere instemt met Halt.",
                "youth_agreed",
            )
        )
    if age_on(referral.youth.birth_date, referral.offence_date) < 16 and referral.parents_agreed is not True:
        reasons.append(
            _reason(
                "OUDERS_NIET_AKKOORD",
                "De jongere is jonger dan 16: de ouders moeten instemmen met Halt.",
                "parents_agreed",
            )
        )
    return reasons


def _check_feit(referral: Referral, feit: HaltFeit | None) -> list[DecisionReason]:
    assert referral.offence is not None  # HALT_STRAF always has an offence
    if referral.offence.feitcode is None:
        return [_reason("FEITCODE_ONTBREEKT", "Een Halt-straf vraagt een feitcode.", "offence.feitcode")]
    if feit is None:
        return [
            _reason(
                "GEEN_HALTFEIT", "De feitcode staat niet op de lijst van Halt-feiten.", "offence.feitcode"
            )
        ]
    if feit.requires_ovj and not referral.ovj_approval:
        return [
            _reason(
                "OVJ_TOESTEMMING_VEREIST",
                f"Voor dit feit ({feit.article}) is toestemming van de officier van justitie nodig.",
                "ovj_approval",
            )
        ]
    return []


def _check_boa_scope(referral: Referral, rules: IntakeRules, feit: HaltFeit | None) -> list[DecisionReason]:
    offence = referral.offence
    assert offence is not None  # BOA referrals are HALT_STRAF
    article = feit.article if feit is not None else offence.article
    allowed = {normalise_article(a) for a in rules.boa_articles}
    if article is not None and normalise_article(article) in allowed:
        return []
    day, code = offence.committed_on, (offence.feitcode or "").upper()
    where = (offence.municipality or "").strip().casefold()
    candidates = rules.boa_projects
    if referral.boa_project is not None:
        candidates = [p for p in candidates if p.code == referral.boa_project.strip().upper()]
    for project in candidates:
        if project.active_on(day) and code in project.feitcodes and project.municipality.casefold() == where:
            return []
    field: ReasonField = "offence.feitcode"
    if referral.boa_project is not None and not candidates:
        detail, field = "Het opgegeven BOA-project is niet bekend.", "boa_project"
    elif referral.boa_project is not None:
        detail = (
            "Het opgegeven BOA-project liep niet op de pleegdatum, of dekt dit feit of deze gemeente niet."
        )
    else:
        detail = "Er liep op de pleegdatum geen BOA-project in deze gemeente dat dit feit dekt."
    return [
        _reason(
            "BOA_BUITEN_BEVOEGDHEID",
            "Een BOA verwijst alleen bij openbare dronkenschap (art. 453 Sr), art. 45 Alcoholwet "
            f"of binnen een lopend BOA-project. {detail}",
            field,  # an unknown project is the project's to put right; else the offence is out of scope
        )
    ]


def _check_truancy(referral: Referral, rules: IntakeRules, prior: int) -> list[DecisionReason]:
    truancy, bounds = referral.truancy, rules.truancy
    assert truancy is not None  # HALT_SCHOOLVERZUIM always has truancy
    if referral.ovj_approval:
        return []
    reasons = []
    hours_ok = bounds.min_hours <= truancy.hours <= bounds.max_hours
    late_ok = bounds.min_times_late <= truancy.times_late <= bounds.max_times_late
    too_much = truancy.hours > bounds.max_hours or truancy.times_late > bounds.max_times_late
    if too_much or not (hours_ok or late_ok):
        reasons.append(
            _reason(
                "SCHOOLVERZUIM_BUITEN_GRENZEN",
                f"Zonder toestemming van de officier van justitie: {bounds.min_hours} tot en met "
                f"{bounds.max_hours} uur verzuim, of {bounds.min_times_late} tot en met "
                f"{bounds.max_times_late} keer te laat.",
                "truancy",
            )
        )
    if prior > 0:
        reasons.append(
            _reason(
                "SCHOOLVERZUIM_HERHAALD",
                "Deze jongere is al eerder voor schoolverzuim verwezen; een nieuwe verwijzing vraagt "
                "toestemming van de officier van justitie.",
                "ovj_approval",
            )
        )
    return reasons


def _check_damage(referral: Referral, rules: IntakeRules) -> list[DecisionReason]:
    damage, caps = referral.damage, rules.damage_caps
    if damage is None or referral.ovj_approval:
        return []
    reasons = []
    if damage.youth_share > caps.per_person_eur:
        reasons.append(
            _reason(
                "SCHADE_BOVEN_GRENS",
                f"De schade per jongere ligt boven € {caps.per_person_eur}; daarvoor is "
                "toestemming van de officier van justitie nodig.",
                "damage.youth_share",
            )
        )
    if damage.case_total > caps.per_case_eur:
        reasons.append(
            _reason(
                "SCHADE_BOVEN_GRENS",
                f"De schade in de zaak ligt boven € {caps.per_case_eur}; daarvoor is "
                "toestemming van de officier van justitie nodig.",
                "damage.case_total",
            )
        )
    return reasons


def _category(referral: Referral, feit: HaltFeit | None) -> Reason | None:
    if referral.track is Track.HALT_SCHOOLVERZUIM:
        return Reason.SCHOOLVERZUIM
    if feit is not None:
        return feit.reason
    return referral.reason


def decide(
    referral: Referral,
    rules: IntakeRules,
    *,
    prior_truancy_referrals: int = 0,
    today: date | None = None,
) -> Decision:
    """Accept or reject a referral, naming every rule it fails; no BSN or name in any message.

    `today` is the hub's day in the Netherlands (default: by the system clock)."""
    feit = rules.feit(referral.offence.feitcode) if referral.offence is not None else None
    reasons = _check_not_ahead(referral, today or clock.today())
    reasons += _check_age(referral, rules)
    if referral.track is Track.HALT_STRAF:
        reasons += _check_halt_straf_consent(referral)
        reasons += _check_feit(referral, feit)
        if referral.referrer.type is ReferrerType.BOA:
            reasons += _check_boa_scope(referral, rules, feit)
    if referral.track is Track.HALT_SCHOOLVERZUIM:
        reasons += _check_truancy(referral, rules, prior_truancy_referrals)
    reasons += _check_damage(referral, rules)
    return Decision(
        outcome=Outcome.REJECTED if reasons else Outcome.ACCEPTED,
        case_reference=referral.case_reference,
        reasons=reasons,
        reason_category=_category(referral, feit),
        rules_version=rules.version,
    )
