"""The leerplicht batch report: every row accounted for, its size bounded by the upload's."""

from __future__ import annotations

from connectors import leerplicht
from hub.api.referral_models import DETAIL_BUDGET_BYTES, _without, batch_report, read_batch
from hub.api.referral_models import RowResult as ReportedRow
from hub.intake.service import IntakeResult
from schemas.envelope import utcnow
from schemas.referral import Decision, Outcome

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


def _first_answer(reference: str) -> IntakeResult:
    decision = Decision(outcome=Outcome.ACCEPTED, case_reference=reference, reasons=[])
    return IntakeResult("ref-1", decision, True, "yk", utcnow(), "HALT_SCHOOLVERZUIM", "LEERPLICHT")


def test_unreadable_rows_taken_before_are_duplicates_also_past_the_budget() -> None:
    """Rule 7: rows with a Dossiernummer taken in before get the first outcome, described or ranged."""
    width = len(leerplicht.HEADERS)
    nonsense = [";x"] * 30_000  # no Dossiernummer: past the budget these are ranged
    row = ";".join(["LP-1", *["x"] * (width - 1)])  # readable Dossiernummer, unreadable row
    raw = "\n".join([HEADER, row, *nonsense, row.replace("LP-1", "LP-2"), ";x"]).encode()
    read = read_batch(leerplicht.iter_batch(raw))
    assert [(n, ref) for n, ref, _ in read.unreadable] == [(1, "LP-1"), (30_002, "LP-2")]
    before = batch_report(read, [])
    assert before.rejected_without_detail[-1] == (before.rejected_without_detail[-1][0], 30_003)
    repeats = {1: _first_answer("LP-1"), 30_002: _first_answer("LP-2")}
    report = batch_report(read, [], repeats)
    assert (report.total, report.duplicate, report.rejected) == (30_003, 2, 30_001)
    duplicates = [r for r in report.rows if r.result is ReportedRow.DUPLICATE]
    assert [(r.row, r.case_reference, r.referral_id) for r in duplicates] == [
        (1, "LP-1", "ref-1"),
        (30_002, "LP-2", "ref-1"),
    ]
    described = [r.row for r in report.rows if r.result is ReportedRow.REJECTED]
    start = before.rejected_without_detail[0][0]
    assert described == list(range(2, start))
    # the ranged repeat is taken out of its range, which is split around it
    assert report.rejected_without_detail == [(start, 30_001), (30_003, 30_003)]


def test_a_row_range_is_split_around_the_rows_taken_out() -> None:
    assert _without([(1, 10), (20, 20), (30, 40)], [1, 5, 6, 20, 40, 50]) == [
        (2, 4),
        (7, 10),
        (30, 39),
    ]
    assert _without([(3, 7)], []) == [(3, 7)]
