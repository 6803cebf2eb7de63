"""Hypothesis properties of the rule checks: ages (rules 2, 8, 14) and end dates (rule 12)."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.verwijsindex.contract import (
    Contactpersoon,
    Geslacht,
    Jeugdige,
    Organisatie,
    SignaalRegistratie,
    add_years,
)
from hub.consent.rules import Required, required_for
from hub.signals.rules import default_end_date, end_date_problem, informing_problems, too_old
from schemas.dates import age_on, birthday

births = st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 12, 31))
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2045, 12, 31))


@settings(max_examples=300)
@given(births, st.integers(min_value=0, max_value=30))
@example(date(2004, 2, 29), 23)
def test_age_turns_on_the_birthday_and_not_a_day_before(birth: date, years: int) -> None:
    day = birthday(birth, years)
    if (birth.month, birth.day) == (2, 29) and day.month == 3:
        assert day.day == 1  # born on 29 February: one year older on 1 March in other years
    else:
        assert (day.month, day.day) == (birth.month, birth.day)
    assert age_on(birth, day) == years
    if years:
        assert age_on(birth, day - timedelta(days=1)) == years - 1


def _registration(birth: date, created: date, end: date) -> SignaalRegistratie:
    return SignaalRegistratie(
        jeugdige=Jeugdige(
            bsn="999990044", voornamen="Sam", geslachtsnaam="Jansen", geboortedatum=birth,
            geslacht=Geslacht.ONBEKEND, gemeente="Den Haag",
        ),
        organisatie=Organisatie(code="halt-den-haag", naam="Halt Den Haag"),
        contactpersoon=Contactpersoon(naam="Ilse Bakker", email="ilse@halt.nl"),
        aangemaakt=created,
        einddatum=end,
    )  # fmt: skip


@settings(max_examples=400)
@given(births, days, st.integers(min_value=-3, max_value=800))
@example(date(2004, 2, 29), date(2027, 2, 28), 1)  # the day before a 29-February youth turns 23
@example(date(2004, 2, 29), date(2027, 3, 1), 1)  # the day the youth turns 23
@example(date(2004, 2, 29), date(2025, 3, 1), 730)  # an end date on the 23rd birthday
def test_the_hubs_rule_checks_and_the_index_contract_agree(birth: date, created: date, days_on: int) -> None:
    """What the hub lets through (rules 12 and the 23-year limit) the index accepts, and the reverse."""
    end = created + timedelta(days=days_on)
    hub_ok = (
        not (birth > created or too_old(birth, created)) and end_date_problem(created, birth, end) is None
    )
    try:
        _registration(birth, created, end)
    except ValidationError:
        index_ok = False
    else:
        index_ok = True
    assert hub_ok == index_ok
    assert too_old(birth, created) == (created >= birthday(birth, 23))


@settings(max_examples=300)
@given(births, days)
def test_age_never_decreases_and_grows_by_at_most_one_a_year(birth: date, day: date) -> None:
    assert age_on(birth, day + timedelta(days=1)) >= age_on(birth, day)
    assert age_on(birth, day + timedelta(days=366)) - age_on(birth, day) in (1, 2)


@given(st.integers(min_value=0, max_value=30))
def test_rule_8_who_must_consent_at_every_age(age: int) -> None:
    needed = required_for(age)
    assert (Required.GEZAGHEBBERS in needed) == (age < 16)
    assert (Required.JEUGDIGE in needed) == (age >= 12)


@settings(max_examples=300)
@given(births, days, st.integers(min_value=1, max_value=2))
def test_rule_12_the_default_end_date_is_always_allowed(birth: date, created: date, years: int) -> None:
    if too_old(birth, created) or created < birth:
        return
    end = default_end_date(created, birth, years)
    if end <= created:  # the 23rd birthday is tomorrow or today: nothing left to allow
        return
    assert end_date_problem(created, birth, end) is None
    assert end_date_problem(created, birth, end + timedelta(days=1)) is not None or end < add_years(
        created, 2
    )


@settings(max_examples=300)
@given(births, days, st.booleans(), st.booleans())
def test_rule_14_what_must_have_happened_before_a_signal(
    birth: date, created: date, informed: bool, letter: bool
) -> None:
    problems = {f for f, _ in informing_problems(birth, created, created if informed else None,
                                                  created if letter else None, None)}  # fmt: skip
    age = age_on(birth, created)
    assert ("youth_informed_at" in problems) == (age >= 12 and not informed)
    assert ("parent_letter_sent_at" in problems) == (age < 16 and not letter)
    assert informing_problems(birth, created, None, None, "gevaar voor de jeugdige") == []


def test_date_arithmetic_past_the_calendar_ends_at_its_first_or_last_day() -> None:
    """Input the rules refuse anyway (born in 9990, created on 31 December 9999) reached this
    arithmetic before the checks, and "year 10013 is out of range" became a 500."""
    assert birthday(date(9990, 1, 1), 23) == date.max and birthday(date(5, 1, 1), -23) == date.min
    assert add_years(date(9999, 12, 31), 2) == date.max and add_years(date(1, 1, 1), -1) == date.min
    assert birthday(date(9976, 2, 29), 23) == date(9999, 3, 1) and add_years(date(9996, 2, 29), 3) == date(
        9999, 2, 28
    )
    assert default_end_date(date(9999, 12, 31), date(9990, 1, 1), 1) == date.max
