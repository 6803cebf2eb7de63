"""Hypothesis properties of the rule checks: ages (rules 2, 8, 14) and end dates (rule 12)."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.verwijsindex.contract import add_years
from hub.consent.rules import Required, required_for
from hub.signals.rules import default_end_date, end_date_problem, informing_problems, too_old
from schemas.dates import age_on

births = st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 12, 31))
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2045, 12, 31))


@settings(max_examples=300)
@given(births, st.integers(min_value=0, max_value=30))
def test_age_turns_on_the_birthday_and_not_a_day_before(birth: date, years: int) -> None:
    birthday = add_years(birth, years)
    if (birth.month, birth.day) == (2, 29) and birthday.day == 28:
        birthday += timedelta(days=1)  # born on 29 February: one year older on 1 March
    assert age_on(birth, birthday) == years
    if years:
        assert age_on(birth, birthday - timedelta(days=1)) == years - 1


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
