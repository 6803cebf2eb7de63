"""The match mail as bytes on the wire: what a mail client reads back, and what stays readable."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from connectors.mail.message import NOTIFICATION_HEADER, build_message, message_id_for
from schemas.notification import MailNotification

SUBJECTS = [
    "Match in de Verwijsindex",
    "Overdracht geweigerd – één heel lange onderwerpregel met tekens als ë, é en – die gecodeerd worden",
    "Een lange ASCII onderwerpregel met veel woorden die over de zesenzeventig tekens heen gaat en verder",
    "a" * 150,  # one word too long to fold between words
]


def read_back(subject: str, html: str | None = "<p>Er is een match (één).</p>") -> tuple[bytes, EmailMessage]:
    mail = MailNotification(
        recipient_caseworker_id="cw-ilse", template="match", subject=subject, case_reference="sig-1",
        body_text="Beste Ilse,\nEr is een match (één) op zaak sig-1.\n", body_html=html,
    )  # fmt: skip
    out = build_message(
        mail, to_addr="ilse@halt.nl", to_name="Ilse de Vriës", sender="ketenhub@halt.nl",
        now=datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
    )  # fmt: skip
    assert out.sender == "ketenhub@halt.nl" and out.recipients == ["ilse@halt.nl"]
    assert out.message_id == message_id_for(mail.notification_id, "ketenhub@halt.nl")
    parsed = BytesParser(policy=policy.default).parsebytes(out.data)
    assert isinstance(parsed, EmailMessage)
    assert parsed[NOTIFICATION_HEADER] == mail.notification_id and parsed["Message-ID"] == out.message_id
    return out.data, parsed


@pytest.mark.parametrize("subject", SUBJECTS, ids=range(len(SUBJECTS)))
def test_a_mail_client_reads_back_subject_names_and_both_bodies(subject: str) -> None:
    raw, msg = read_back(subject)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].display_name == "Ilse de Vriës"
    assert msg["From"].addresses[0].addr_spec == "ketenhub@halt.nl"
    assert msg["Auto-Submitted"] == "auto-generated"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Beste Ilse,\nEr is een match (één) op zaak sig-1.\n"
    assert html.get_content().strip() == "<p>Er is een match (één).</p>"
    # 7-bit on the wire, and ASCII text stays readable (quoted-printable, not base64): a check
    # that a name or BSN is absent from a raw mail can fail when it should
    assert raw.isascii() and b"Beste Ilse," in raw and b"op zaak sig-1." in raw


def test_without_html_the_mail_is_plain_text() -> None:
    _, msg = read_back("Match in de Verwijsindex", html=None)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Beste Ilse,\nEr is een match (één) op zaak sig-1.\n"
