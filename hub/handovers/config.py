"""Settings of routing and receiver delivery (section `handovers`, KETENHUB_HANDOVERS__*)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HandoverSettings(BaseModel):
    """How long a receiver has to answer, how often that is checked, and webhook delivery."""

    # a misspelt name in a section given whole as JSON is refused, not ignored
    model_config = ConfigDict(extra="forbid")

    answer_timeout_s: float = Field(
        default=5 * 24 * 3600, gt=0, description="no answer after this: tell the caseworker"
    )
    check_interval_s: float = Field(default=60.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Delays before each parked webhook attempt; after the last, the handover is dead-lettered.
    retry_schedule_s: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
    allow_plain_http: bool = Field(default=False, description="webhooks over http:// (tests, local demo)")
    # Rule 21: a zorgmelding is a report to Veilig Thuis, the one disclosure without consent; to any
    # other organisation it would be a handover without consent, and is refused.
    zorgmelding_receivers: tuple[str, ...] = Field(
        default=("veilig-thuis-haaglanden",),
        description="the organisations (as registered receivers) that take zorgmeldingen: Veilig Thuis",
    )
