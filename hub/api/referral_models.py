"""Response models of the partner referral endpoints (OpenAPI documents them, errors included)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from hub.api.problems import ProblemBody
from schemas.referral import Decision, Outcome, Reason


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ReasonOut(_Out):
    """One reason: a stable code, a Dutch explanation and the field it concerns."""

    code: str
    message: str
    field: str | None = None


class DecisionOut(_Out):
    """Intake's decision: accepted or rejected, with every reason."""

    outcome: Outcome
    reasons: list[ReasonOut] = Field(default_factory=list)
    reason_category: Reason | None = None
    rules_version: str | None = None

    @classmethod
    def of(cls, decision: Decision) -> DecisionOut:
        """From the canonical Decision."""
        return cls(
            outcome=decision.outcome,
            reasons=[ReasonOut(code=r.code, message=r.message, field=r.field) for r in decision.reasons],
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
    """The answer to a leerplicht batch: counts and every row."""

    total: int
    accepted: int
    rejected: int
    duplicate: int
    rows: list[RowReport]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json answers an endpoint can give."""
    text = {
        400: "Bericht onleesbaar of ongeldig (zie invalidParams)",
        401: "Geen of een onbekende API-sleutel",
        403: "Deze partner mag dit endpoint niet gebruiken",
        404: "Niet gevonden (of niet van deze partner)",
        413: "Bericht te groot",
        415: "Verkeerd Content-Type",
        503: "De hub start nog of de database is niet bereikbaar",
    }
    return {
        c: {
            "model": ProblemBody,
            "description": text[c],
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
        }
        for c in codes
    }
