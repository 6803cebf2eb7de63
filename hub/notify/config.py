"""Settings of notifications and borging (section `notify`, env KETENHUB_NOTIFY__*)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NotifySettings(BaseModel):
    """Borging (rule 17) thresholds, the daily check, and the embedded sink's mailbox size."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    borging_after_days: int = Field(default=14, ge=1, le=365, description="absent longer than this: borging")
    borging_interval_s: float = Field(default=24 * 3600.0, gt=0, description="how often the check runs")
    sink_keep: int = Field(default=500, ge=1, le=100_000, description="mails the embedded sink keeps")
