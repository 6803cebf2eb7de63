"""The retention terms (`KETENHUB_RETENTION__*`); the purge is `hub.retention.purge`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

AUDIT_MIN_DAYS = 5 * 365 + 2  # rule 18: at least five years, leap days included


class RetentionSettings(BaseModel):
    """How long the hub keeps personal data (days), and how often it looks."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    case_days: int = Field(default=5 * 365, ge=30, description="a youth's case, after its last activity")
    signal_days: int = Field(default=0, ge=0, le=3650, description="a signal, after its end date (rule 12)")
    audit_days: int = Field(default=AUDIT_MIN_DAYS, ge=AUDIT_MIN_DAYS, description="audit entries (rule 18)")
    interval_h: float = Field(default=24.0, gt=0, description="the hub's purge runs this often")
