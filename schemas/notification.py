"""A mail to a caseworker (match notices, waiting handovers); never carries a BSN (rule 16)."""

from __future__ import annotations

import uuid

from pydantic import Field, field_validator

from schemas._base import CanonicalModel, Code
from schemas.bsn import contains_bsn


class MailNotification(CanonicalModel):
    """One mail, rendered, ready for the mail connector."""

    notification_id: Code = Field(default_factory=lambda: str(uuid.uuid4()))
    recipient_caseworker_id: Code
    template: Code
    subject: str = Field(min_length=1, max_length=200)
    body_text: str = Field(min_length=1, max_length=50_000)
    body_html: str | None = Field(default=None, max_length=200_000)
    case_reference: Code

    @field_validator("subject", "body_text", "body_html")
    @classmethod
    def _no_bsn(cls, value: str | None) -> str | None:
        if value is not None and contains_bsn(value):
            raise ValueError("mail text contains what looks like a BSN")
        return value
