"""Rules 12, 13 and 14 for a signal, as pure functions: they return what is wrong."""

from __future__ import annotations

from datetime import date

from connectors.verwijsindex.contract import default_einddatum, max_einddatum
from connectors.verwijsindex.mapping import telefoon_van
from schemas.caseworker import Caseworker
from schemas.dates import age_on
from schemas.signal import VerwijsindexSignal

MAX_AGE = 23


def end_date_problem(created: date, birth: date, end: date) -> str | None:
    """Rule 12: after created, at most created + 2 years and at most the 23rd birthday."""
    if end <= created:
        return "de einddatum moet na de aanmaakdatum liggen"
    if end > max_einddatum(created, birth):
        return "de einddatum ligt na aanmaakdatum + 2 jaar of na de 23e verjaardag (regel 12)"
    return None


def end_date_passed(end: date, today: date) -> str | None:
    """A signal whose end date lies before `today` would be over before it starts: the hub counts
    it no longer active and the Verwijsindex refuses it. A backdated creation date allows one."""
    if end < today:
        return "de einddatum ligt in het verleden: het signaal zou al afgelopen zijn"
    return None


def default_end_date(created: date, birth: date, years: int) -> date:
    """Rule 12's default: created + `years` (configured), capped by the maximum."""
    return default_einddatum(created, birth, years)


def informing_problems(
    birth: date,
    sent_on: date,
    youth_informed_at: date | None,
    parent_letter_sent_at: date | None,
    deferral_reason: str | None,
) -> list[tuple[str, str]]:
    """Rule 14: (field, what is missing); empty when the signal may be sent on `sent_on` (by the
    youth's age that day, not on the signal's creation date, which a caseworker may set back)."""
    if deferral_reason:
        return []
    age = age_on(birth, sent_on)
    problems = []
    if age >= 12 and youth_informed_at is None:
        problems.append(("youth_informed_at", "een jeugdige van 12 jaar of ouder moet zijn geïnformeerd"))
    if age < 16 and parent_letter_sent_at is None:
        problems.append(("parent_letter_sent_at", "onder 16 jaar moet de ouderbrief verstuurd zijn"))
    return problems


def not_informed(signal: VerwijsindexSignal, day: date) -> str | None:
    """Rule 14 on `day`, the day a registration is sent: why it may not go (the fields missing,
    never a value or the youth's age), else None. The API judged it when the signal was made; a
    registration sent later (registered again, replayed from the DLQ, delivered after a wait) may
    meet a youth who turned 12 or 16 since and was not informed for that age."""
    missing = informing_problems(
        signal.youth.birth_date, day, signal.youth_informed_at, signal.parent_letter_sent_at,
        signal.deferral_reason,
    )  # fmt: skip
    if not missing:
        return None
    return (
        f"rule 14: the registration may not be sent on {day.isoformat()}: {', '.join(f for f, _ in missing)}"
        " missing for the youth's age that day; nothing was sent. Withdraw the signal and register it anew"
        " once the youth and parents are informed (or with a reason for deferral)"
    )


def too_old(birth: date, created: date) -> bool:
    """The Verwijsindex holds youths up to their 23rd birthday."""
    return age_on(birth, created) >= MAX_AGE


def phone_problem(phone: str | None) -> str | None:
    """Why the Verwijsindex cannot take this phone number for a signal's contact person, even
    tidied up (`telefoon_van`); None when it can, or when there is none."""
    if phone is None or telefoon_van(phone) is not None:
        return None
    return (
        "het telefoonnummer van de medewerker past niet in de Verwijsindex: die vraagt 6 tot 20 cijfers "
        "(met eventueel een + ervoor)"
    )


def contact_problem(caseworker: Caseworker) -> str | None:
    """Why `caseworker` cannot be a signal's contact person: not authorised to signal (rule 13), or
    a phone number the Verwijsindex cannot take; None when they can."""
    if not caseworker.meldingsbevoegd:
        return "de medewerker is niet meldingsbevoegd (regel 13)"
    return phone_problem(caseworker.phone)
