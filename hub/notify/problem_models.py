"""The problems API's bodies (GET and POST /api/v1/medewerkers/problemen), as the document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from hub.ops.dlq import Reason
from schemas._base import CanonicalModel


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ProblemOut(_Out):
    """A problem an administrator must act on: open, or resolved (when, by whom, how and why)."""

    id: int
    at: datetime = Field(description="When it was found; a problem found again has the last time.")
    kind: str = Field(
        description="geen_bereikbare_ontvanger, mail_niet_bezorgd, mail_inhoud_geweigerd, "
        "mail_niet_verstuurd_storing, mail_uitkomst_onbekend, borging_zonder_vervanger, borging_mislukt "
        "or match_overgeslagen."
    )
    caseworker_id: str | None = Field(description="The caseworker whose directory entry it is about.")
    reference: str | None = Field(description="The notification, case, signal or match id; never a BSN.")
    reason: str
    transaction_id: str | None
    status: Literal["open", "resolved"]
    resolved_at: datetime | None
    resolved_by: str | None = Field(description="The operator, or the part of the hub that resolved it.")
    resolved_how: Literal["hub", "operator"] | None = Field(
        description="hub: the hub saw its cause go; operator: an administrator marked it resolved."
    )
    resolution: str | None = Field(description="How: the hub's words, or the operator's reason.")


class UnreachableOut(_Out):
    """A caseworker away or gone today whose mail nobody reachable reads (found now, not recorded)."""

    caseworker_id: str
    name: str
    active: bool


class ProblemsOut(_Out):
    """Who is unreachable now, and the recorded problems asked for, the most recently found first."""

    unreachable_now: list[UnreachableOut]
    recorded: list[ProblemOut]


class ResolveIn(CanonicalModel):
    """Why the problem is resolved: what was done about it. About the problem, never the youth (no BSN)."""

    reason: Reason
