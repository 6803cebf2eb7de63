"""Caseworkers (Halt-medewerkers), their absences and delegates, and professionals' contact cards."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import Field, model_validator

from schemas._base import CanonicalModel, Code, Email, Name, Phone


class Team(StrEnum):
    """Halt Den Haag's teams."""

    DEN_HAAG = "DEN_HAAG"
    LEIDEN = "LEIDEN"
    GOUDA = "GOUDA"


class Absence(CanonicalModel):
    """A period (both days inclusive) in which a caseworker is away."""

    start: date
    end: date

    @model_validator(mode="after")
    def _in_order(self) -> Absence:
        if self.end < self.start:
            raise ValueError("absence end lies before its start")
        return self

    @property
    def days(self) -> int:
        """Length in days, both ends counted."""
        return (self.end - self.start).days + 1

    def covers(self, day: date) -> bool:
        """True when day falls within the absence."""
        return self.start <= day <= self.end


class Caseworker(CanonicalModel):
    """A Halt-medewerker: who gets mail, who may signal, who stands in."""

    caseworker_id: Code
    name: Name
    email: Email
    phone: Phone | None = None
    team: Team
    meldingsbevoegd: bool = Field(default=False, description="authorised to signal (rule 13)")
    absences: list[Absence] = Field(default_factory=list)
    delegate_id: Code | None = None
    active: bool = Field(default=True, description="False once the caseworker has left")

    @model_validator(mode="after")
    def _not_own_delegate(self) -> Caseworker:
        if self.delegate_id is not None and self.delegate_id == self.caseworker_id:
            raise ValueError("a caseworker cannot be their own delegate")
        return self

    def is_absent_on(self, day: date) -> bool:
        """True when an absence covers day."""
        return any(a.covers(day) for a in self.absences)


class ContactDetails(CanonicalModel):
    """A professional's contact card: the only thing match mails carry about them (rule 16)."""

    name: Name
    organisation: Name
    email: Email | None = None
    phone: Phone | None = None
