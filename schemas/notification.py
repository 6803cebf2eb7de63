"""A mail to a caseworker (match notices, waiting handovers); never carries a BSN (rule 16)."""

from __future__ import annotations

import re
import uuid

from pydantic import Field, model_validator

from schemas._base import CanonicalModel, Code
from schemas.bsn import contains_bsn

NOT_BSN_MAX = 1_000


class MailNotification(CanonicalModel):
    """One mail, rendered, ready for the mail connector.

    `for_caseworker_id` is the caseworker the mail is for: the connector sends it to whoever reads
    their mail when it is sent (themselves, or their delegate then, rule 16), and words the mail for a
    delegate then too. Messages queued before that field existed have none: they go, as before, to
    whoever reads `recipient_caseworker_id`'s mail, with the text as it was rendered.
    """

    notification_id: Code = Field(default_factory=lambda: str(uuid.uuid4()))
    recipient_caseworker_id: Code  # who read the caseworker's mail when it was queued
    for_caseworker_id: Code | None = None
    template: Code
    subject: str = Field(min_length=1, max_length=200)
    body_text: str = Field(min_length=1, max_length=50_000)
    body_html: str | None = Field(default=None, max_length=200_000)
    case_reference: Code
    # The match a match mail tells of: when the SMTP server accepts the mail, the connector records on
    # the match when and to whom it went. Match mails queued before this field existed have none.
    match_id: Code | None = None
    # Values the text shows that were validated as something else than a youth's BSN (a counterpart's
    # phone number, a match, signal or case id). The BSN check skips them where they stand alone
    # (no digit right before or after) and still reads the rest of the text.
    not_bsn: list[Code] = Field(default_factory=list, max_length=NOT_BSN_MAX)

    @model_validator(mode="after")
    def _no_bsn(self) -> MailNotification:
        for text in (self.subject, self.body_text, self.body_html):
            if text is not None and contains_bsn(without(text, self.not_bsn)):
                raise ValueError("mail text contains what looks like a BSN")
        return self


def without(text: str, values: list[str]) -> str:
    """`text` with each of `values` blanked out where it stands alone: never next to a digit, so that
    taking a value out cannot cut into (or out of) a longer run of digits, such as a BSN."""
    for value in sorted(set(values), key=len, reverse=True):
        text = re.sub(rf"(?<!\d){re.escape(value)}(?!\d)", " ", text)
    return text
