"""Calendar arithmetic the rules share: completed years of age."""

from __future__ import annotations

from datetime import date


def age_on(birth_date: date, day: date) -> int:
    """Completed years on `day`; someone born on 29 February turns older on 1 March in other years."""
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - int(before_birthday)
