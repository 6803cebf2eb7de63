"""Response models of the partner referral endpoints (OpenAPI documents them, errors included)."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from hub.api.problems import RETRY_AFTER_HEADER, TOO_MANY_REQUESTS, ProblemBody
from hub.intake import reject_unparseable
from hub.intake.partner_fields import partner_field
from hub.intake.service import IntakeResult
from schemas.partners.leerplicht import RowResult as ParsedRow
from schemas.referral import Decision, Outcome, Reason, Referral, ReferrerType

# Unreadable rows are described until their descriptions fill this much of the report; the rest are
# named by row range only. A row of a few bytes ("x") fails on every column, so without a budget the
# report grew to dozens of times the upload. With it the report is bounded by the readable rows
# (about twice their size: a referral id and decision each) plus this budget, which still describes
# some hundreds of bad rows in full: enough to mend an export and send it again.
DETAIL_BUDGET_BYTES: Final = 256 * 1024


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ReasonOut(_Out):
    """One reason: a stable code, a Dutch explanation and the field it concerns, in the hub's terms
    and in the referrer's own."""

    code: str
    message: str
    field: str | None = Field(
        default=None,
        description="the field the reason concerns, in the hub's canonical terms (`youth.birth_date`, "
        "`offence.committed_on`, `truancy.period_end`, `case_reference`, ...); for FORMAT_ONGELDIG the "
        "field as the referrer sent it",
    )
    partner_field: str | None = Field(
        default=None,
        description="the same field in the referrer's own format, as its format errors (invalidParams) "
        "name it: a path in its JSON (`verdachte.geboortedatum`, `betrokkene.geboortedatum`, `tijdstip`, "
        "`aanleiding.datum`, `bonnummer`) or a leerplicht column header (`Geboortedatum`, `Verzuim tot "
        "en met`, `Dossiernummer`); for FORMAT_ONGELDIG the same as `field`. Null when the reason names "
        "no field, or the referrer's format has none for it (a BOA referral's `ovj_approval`; a truancy "
        "referral's `truancy`, whose bounds are on two columns: Uren verzuim and Aantal keer te laat)",
    )


class DecisionOut(_Out):
    """Intake's decision: accepted or rejected, with every reason."""

    outcome: Outcome
    reasons: list[ReasonOut] = Field(default_factory=list)
    reason_category: Reason | None = None
    rules_version: str | None = None

    @classmethod
    def of(cls, decision: Decision, referrer_type: str | None) -> DecisionOut:
        """From the canonical Decision on a referral of this referrer type (whose format's fields the
        reasons name beside the canonical ones)."""
        return cls(
            outcome=decision.outcome,
            reasons=[
                ReasonOut(
                    code=r.code,
                    message=r.message,
                    field=r.field,
                    partner_field=partner_field(r, referrer_type),
                )
                for r in decision.reasons
            ],
            reason_category=decision.reason_category,
            rules_version=decision.rules_version,
        )


class ReferralStatus(_Out):
    """A referral as its referrer may see it: id, status and decision (no personal data)."""

    referral_id: str
    case_reference: str
    track: str
    status: Outcome
    decision: DecisionOut
    received_at: datetime


class ReferralAnswer(ReferralStatus):
    """The answer to a POST: `duplicate` is true when this referral was already received (rule 7)."""

    duplicate: bool


class RowResult(StrEnum):
    """What became of one CSV row."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"


class RowReport(_Out):
    """One CSV row: accepted with its referral id, a duplicate (with the first outcome), or rejected."""

    row: int = Field(description="1-based data row; the header is row 0")
    case_reference: str | None = None
    result: RowResult
    referral_id: str | None = Field(default=None, description="absent when the row could not be read")
    decision: DecisionOut


class BatchReport(_Out):
    """The answer to a leerplicht batch: counts and every row, unreadable ones past a budget by range."""

    total: int
    accepted: int
    rejected: int
    duplicate: int
    rows: list[RowReport] = Field(
        description="every row that was read, and unreadable rows with reasons while the budget lasts"
    )
    rejected_without_detail: list[tuple[int, int]] = Field(
        default_factory=list,
        description="unreadable rows past the report's budget, as [first, last] row ranges; "
        "mend the rows listed above and send the batch again to see their reasons",
    )


@dataclass
class ReadBatch:
    """A batch as read: the readable rows, to take in, and what the report says of the other rows.

    Unreadable rows are turned into report entries as they are read and then let go: held as parsed,
    a megabyte of them filled the heap, and the collector then held the interpreter (and the event
    loop with it) for a third of a second at a time.
    """

    readable: list[ParsedRow] = field(default_factory=list)
    described: list[RowReport] = field(default_factory=list)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    ranged: int = 0  # a range may span blank lines, which are no rows: its rows are counted one by one
    # Unreadable rows with a readable case reference, described or ranged: (row, reference, BSN
    # when readable). Rule 7: a reference taken in before is answered with its first outcome.
    unreadable: list[tuple[int, str, str | None]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Data rows, blank lines not counted."""
        return len(self.readable) + len(self.described) + self.ranged

    @property
    def referrals(self) -> list[Referral]:
        """The readable rows' referrals, in order."""
        return [r.referral for r in self.readable if r.referral is not None]


def read_batch(rows: Iterable[ParsedRow]) -> ReadBatch:
    """Sort parsed rows into readable ones and report entries, describing bad rows within the budget."""
    read, budget, joins = ReadBatch(), DETAIL_BUDGET_BYTES, False
    for row in rows:
        joins, follows = False, joins  # whether the previous row went into the last range
        if row.referral is not None:
            read.readable.append(row)
            continue
        if row.case_reference is not None:
            read.unreadable.append((row.row, row.case_reference, row.bsn))
        if budget > 0:
            decision = reject_unparseable(row.problems, row.case_reference)
            report = _row(
                row.row, row.case_reference, RowResult.REJECTED, None, decision, ReferrerType.LEERPLICHT
            )
            budget -= len(report.model_dump_json(by_alias=True))
            if budget >= 0:
                read.described.append(report)
                continue
            budget = 0  # spent: from this row on, ranges only
        if follows:
            read.ranges[-1] = (read.ranges[-1][0], row.row)
        else:
            read.ranges.append((row.row, row.row))
        read.ranged, joins = read.ranged + 1, True
    return read


def batch_report(
    read: ReadBatch, results: Sequence[IntakeResult], repeats: Mapping[int, IntakeResult] | None = None
) -> BatchReport:
    """The report of a batch, given the intake results of its readable rows in order.

    `repeats`: unreadable rows (by row number) whose case reference was taken in before, with that
    first answer; they are reported as duplicates with it, not as rejected (rule 7).
    """
    repeats = repeats or {}
    taken = [
        _row(
            row.row,
            row.case_reference,
            RowResult.DUPLICATE if result.duplicate else RowResult(result.decision.outcome.value),
            result.referral_id,
            result.decision,
            result.referrer_type,
        )
        for row, result in zip(read.readable, results, strict=True)
    ]
    references = {number: reference for number, reference, _ in read.unreadable}
    repeated = [
        _row(
            number,
            references[number],
            RowResult.DUPLICATE,
            first.referral_id,
            first.decision,
            first.referrer_type,
        )
        for number, first in sorted(repeats.items())
    ]
    described = [r for r in read.described if r.row not in repeats]
    ranged_repeats = len(repeats) - (len(read.described) - len(described))
    reports = list(heapq.merge(taken, described, repeated, key=lambda r: r.row))
    return BatchReport(
        total=read.total,
        accepted=sum(r.result is RowResult.ACCEPTED for r in taken),
        rejected=sum(r.result is RowResult.REJECTED for r in reports) + read.ranged - ranged_repeats,
        duplicate=sum(r.result is RowResult.DUPLICATE for r in reports),
        rows=reports,
        rejected_without_detail=_without(read.ranges, repeats.keys()),
    )


def _without(ranges: list[tuple[int, int]], rows: Iterable[int]) -> list[tuple[int, int]]:
    """Row ranges with these rows taken out (a range split around each)."""
    out, taken = [], sorted(rows)
    for first, last in ranges:
        start = first
        for row in taken[bisect.bisect_left(taken, first) : bisect.bisect_right(taken, last)]:
            if row > start:
                out.append((start, row - 1))
            start = row + 1
        if start <= last:
            out.append((start, last))
    return out


def _row(
    number: int,
    reference: str | None,
    kind: RowResult,
    referral_id: str | None,
    decision: Decision,
    referrer_type: str,
) -> RowReport:
    return RowReport(
        row=number,
        case_reference=reference,
        result=kind,
        referral_id=referral_id,
        decision=DecisionOut.of(decision, referrer_type),
    )


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json answers an endpoint can give."""
    text = {
        400: "Bericht onleesbaar of ongeldig (zie invalidParams)",
        401: "Geen of een onbekende API-sleutel",
        403: "Deze partner mag dit endpoint niet gebruiken",
        404: "Niet gevonden (of niet van deze partner)",
        409: "Dit kenmerk is al gebruikt voor een verwijzing van een andere jeugdige (regel 7)",
        413: "Bericht te groot",
        415: "Verkeerd Content-Type",
        429: TOO_MANY_REQUESTS,
        503: "De hub start nog of de database is niet bereikbaar",
    }
    return {
        c: {
            "model": ProblemBody,
            "description": text[c],
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
        }
        | ({"headers": RETRY_AFTER_HEADER} if c == 429 else {})
        for c in codes
    }
