"""Calendar arithmetic the rules share: completed years of age, and the birthday they turn on.

One convention everywhere: someone born on 29 February turns a year older on 1 March in other years.
"""

from __future__ import annotations

from datetime import MAXYEAR, MINYEAR, date, timedelta


def age_on(birth_date: date, day: date) -> int:
    """Completed years on `day`; someone born on 29 February turns older on 1 March in other years."""
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - int(before_birthday)


def birthday(birth_date: date, age: int) -> date:
    """The day someone turns `age`: the first day on which `age_on` gives `age` (29 Feb → 1 March).

    Past the calendar's range (year 1 to 9999) it is the calendar's first or last day: for input
    that the rules refuse anyway (born in 9990), not an error of its own.
    """
    year = birth_date.year + age
    if not MINYEAR <= year <= MAXYEAR:
        return date.max if age > 0 else date.min
    try:
        return birth_date.replace(year=year)
    except ValueError:  # 29 February in a year without it
        return date(year, 2, 28) + timedelta(days=1)
