"""Rules 12 and 14 for a new signal, as pure functions over dates: they return what is wrong."""

from __future__ import annotations

from datetime import date

from connectors.verwijsindex.contract import default_einddatum, max_einddatum
from schemas.dates import age_on

MAX_AGE = 23


def end_date_problem(created: date, birth: date, end: date) -> str | None:
    """Rule 12: after created, at most created + 2 years and at most the 23rd birthday."""
    if end <= created:
        return "de einddatum moet na de aanmaakdatum liggen"
    if end > max_einddatum(created, birth):
        return "de einddatum ligt na aanmaakdatum + 2 jaar of na de 23e verjaardag (regel 12)"
    return None


def default_end_date(created: date, birth: date, years: int) -> date:
    """Rule 12's default: created + `years` (configured), capped by the maximum."""
    return default_einddatum(created, birth, years)


def informing_problems(
    birth: date,
    created: date,
    youth_informed_at: date | None,
    parent_letter_sent_at: date | None,
    deferral_reason: str | None,
) -> list[tuple[str, str]]:
    """Rule 14: (field, what is missing); empty when the signal may be sent."""
    if deferral_reason:
        return []
    age = age_on(birth, created)
    problems = []
    if age >= 12 and youth_informed_at is None:
        problems.append(("youth_informed_at", "een jeugdige van 12 jaar of ouder moet zijn geïnformeerd"))
    if age < 16 and parent_letter_sent_at is None:
        problems.append(("parent_letter_sent_at", "onder 16 jaar moet de ouderbrief verstuurd zijn"))
    return problems


def too_old(birth: date, created: date) -> bool:
    """The Verwijsindex holds youths up to their 23rd birthday."""
    return age_on(birth, created) >= MAX_AGE
