"""A Verwijsindex match: two or more signals on one youth or one family."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from schemas._base import CanonicalModel, Code
from schemas.caseworker import ContactDetails


class MatchType(StrEnum):
    """Same youth (CLIENTMATCH) or youths sharing a parent (GEZINSMATCH)."""

    CLIENTMATCH = "CLIENTMATCH"
    GEZINSMATCH = "GEZINSMATCH"


class Match(CanonicalModel):
    """A match on one of our signals, with the counterparts' contact details only."""

    match_id: Code
    signal_id: Code
    type: MatchType
    counterparts: list[ContactDetails] = Field(min_length=1)
    notified_caseworker: Code | None = None
    notified_at: datetime | None = None
