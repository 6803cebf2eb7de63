"""When borging is due (rule 17): `why` counts one absence however it was entered."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from hub.notify.borging import why
from schemas.caseworker import Absence, Caseworker, Team

START = date(2025, 3, 1)


def _cw(*spans: tuple[date, date]) -> Caseworker:
    return Caseworker(
        caseworker_id="cw-ilse", name="Ilse Bakker", email="ilse@halt.nl", team=Team.DEN_HAAG,
        delegate_id="cw-omar", absences=[Absence(start=s, end=e) for s, e in spans],
    )  # fmt: skip


def _weeks(n: int, gap_days: int = 0) -> list[tuple[date, date]]:
    """Sick leave extended week by week: each 7-day absence starts `gap_days` after the previous ends."""
    spans, start = [], START
    for _ in range(n):
        spans.append((start, start + timedelta(days=6)))
        start += timedelta(days=7 + gap_days)
    return spans


@pytest.mark.parametrize("nth_day", [15, 21, 31, 56])
def test_back_to_back_weeks_count_as_one_absence_like_one_record(nth_day: int) -> None:
    day = START + timedelta(days=nth_day - 1)
    one = why(_cw((START, date(2025, 4, 30))), day, 14)
    weekly = why(_cw(*_weeks(8)), day, 14)
    assert one is not None and weekly == one
    assert "01-03-2025" in weekly


def test_overlapping_and_unordered_records_merge_too() -> None:
    spans = [
        (date(2025, 3, 10), date(2025, 3, 20)),
        (START, date(2025, 3, 12)),
        (date(2025, 3, 5), date(2025, 3, 6)),
    ]
    assert why(_cw(*spans), date(2025, 3, 15), 14) is not None  # day 15 since 1 March
    assert why(_cw(*spans), date(2025, 3, 14), 14) is None  # day 14: not yet longer than 14 days


def test_a_day_at_work_between_two_absences_starts_the_count_again() -> None:
    spans = _weeks(3, gap_days=1)  # 1-7, 9-15, 17-23 March
    assert why(_cw(*spans), date(2025, 3, 23), 14) is None
    assert why(_cw(*spans), date(2025, 3, 14), 14) is None


def test_the_day_after_the_absence_ends_borging_is_no_longer_due() -> None:
    assert why(_cw(*_weeks(8)), START + timedelta(days=56), 14) is None
    assert why(_cw(*_weeks(8)), START + timedelta(days=55), 14) is not None  # the last day, inclusive
