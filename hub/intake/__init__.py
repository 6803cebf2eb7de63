"""Intake: the pure decision on a referral (rules 2-6) and the rules it is made under."""

from __future__ import annotations

from collections.abc import Sequence

from hub.intake.config import IntakeRules, load_intake_rules
from hub.intake.rules import decide
from schemas._base import CODE_MAX, as_code, readable
from schemas.dates import age_on
from schemas.problems import FieldProblem
from schemas.referral import Decision, DecisionReason, Outcome

__all__ = ["IntakeRules", "age_on", "decide", "load_intake_rules", "reject_unparseable"]

FORMAT_ONGELDIG = "FORMAT_ONGELDIG"


def reject_unparseable(problems: Sequence[FieldProblem], case_reference: str | None) -> Decision:
    """The decision published for a record that could not be parsed into a Referral.

    Whatever the record held, this is a decision that can be stored and sent: a case reference
    that is no valid reference is left out, a field name is cut to size with its control characters
    shown as U+FFFD.
    """
    reasons = [
        DecisionReason(
            code=FORMAT_ONGELDIG,
            message=readable(p.problem + (f" (toegestaan: {p.allowed})" if p.allowed else ""))[:2000],
            field=as_code(readable(p.field)[:CODE_MAX]),
        )
        for p in problems
    ] or [DecisionReason(code=FORMAT_ONGELDIG, message="Het bericht kon niet worden gelezen.")]
    return Decision(outcome=Outcome.REJECTED, case_reference=as_code(case_reference), reasons=reasons)
