"""The leerplicht batch report: every row accounted for, its size bounded by the upload's."""

from __future__ import annotations

from connectors import leerplicht
from hub.api.referral_models import DETAIL_BUDGET_BYTES, batch_report, read_batch

HEADER = ";".join(leerplicht.HEADERS)


def test_a_batch_of_nonsense_rows_gets_a_report_bounded_by_the_budget() -> None:
    """Rows of a few bytes that fail on every column made a report 38 times the upload."""
    rows = ["x"] * 30_000 + [""] + [";".join(["x"] * len(leerplicht.HEADERS))] * 2_000
    raw = "\n".join([HEADER, *rows]).encode()
    report = batch_report(read_batch(leerplicht.iter_batch(raw)), [])
    size = len(report.model_dump_json(by_alias=True))
    assert size < DETAIL_BUDGET_BYTES + len(raw) // 4, (size, len(raw))
    assert (report.total, report.rejected, report.accepted) == (32_000, 32_000, 0)
    detailed = [r.row for r in report.rows]
    assert detailed == list(range(1, len(detailed) + 1))  # the first bad rows, in full
    assert all(len(r.decision.reasons) <= leerplicht.MAX_PROBLEMS_PER_ROW + 1 for r in report.rows)
    # the rest by range; the blank line (row 30_001) is no row but does not split a range
    assert report.rejected_without_detail == [(len(detailed) + 1, 32_001)]


def test_a_few_bad_rows_are_all_described() -> None:
    raw = "\n".join([HEADER, "x", "y", ";".join(["x"] * len(leerplicht.HEADERS))]).encode()
    report = batch_report(read_batch(leerplicht.iter_batch(raw)), [])
    assert [r.row for r in report.rows] == [1, 2, 3]
    assert report.rejected_without_detail == []
    assert len(report.rows[2].decision.reasons) == leerplicht.MAX_PROBLEMS_PER_ROW + 1
