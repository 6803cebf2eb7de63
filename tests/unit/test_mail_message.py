"""The match mail as bytes on the wire: what a mail client reads back, and what stays readable."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connectors.mail.message import (
    NOTIFICATION_HEADER,
    TRANSACTION_HEADER,
    build_message,
    header_transaction_id,
    message_id_for,
)
from hub.directory.mailbox import email_problem
from hub.errors import PermanentError
from schemas._base import EMAIL_PATTERN
from schemas.bsn import contains_bsn
from schemas.notification import MailNotification

NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
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


@pytest.mark.parametrize("name", ["Jan\r\nBcc: spion@example.org", "Jan\r\nfoo", "Jan\nde\tVries"])
def test_a_line_break_in_a_name_or_subject_never_starts_a_header(name: str) -> None:
    mail = MailNotification(
        recipient_caseworker_id="cw-jan", template="match", subject="Match\r\nBcc: spion@example.org",
        body_text="Er is een match.", case_reference="sig-1",
    )  # fmt: skip
    out = build_message(mail, to_addr="jan@halt.nl", to_name=name, sender="ketenhub@halt.nl", now=NOW)
    msg = BytesParser(policy=policy.default).parsebytes(out.data)
    assert msg["Bcc"] is None and out.recipients == ["jan@halt.nl"]
    assert msg["Subject"] == "Match Bcc: spion@example.org"
    assert msg["To"].addresses[0].addr_spec == "jan@halt.nl"
    assert msg["To"].addresses[0].display_name == " ".join(name.split())
    assert msg[NOTIFICATION_HEADER] == mail.notification_id  # the headers after To are still headers


def test_long_names_fold_within_the_limits_and_odd_addresses_are_handled() -> None:
    mail = MailNotification(
        recipient_caseworker_id="cw-x", template="match", subject="Match", body_text="x", case_reference="s"
    )
    name = "Ëëë " * 50
    out = build_message(mail, to_addr="x@bücher.de", to_name=name, sender="ketenhub@halt.nl", now=NOW)
    assert out.recipients == ["x@xn--bcher-kva.de"]
    assert all(len(line) <= 998 for line in out.data.split(b"\n"))  # RFC 5322 line limit
    assert all(len(word) <= 75 for word in re.findall(rb"=\?[^ ]*?\?=", out.data))  # RFC 2047
    msg = BytesParser(policy=policy.default).parsebytes(out.data)
    shown = msg["To"].addresses[0].display_name
    assert shown.endswith(" …") and name.startswith(shown.removesuffix(" …"))  # shortened by words
    short = build_message(mail, to_addr="x@halt.nl", to_name="Ëlsa Öztürk", sender="k@halt.nl", now=NOW)
    assert BytesParser(policy=policy.default).parsebytes(short.data)["To"].addresses[0].display_name == (
        "Ëlsa Öztürk"
    )
    with pytest.raises(PermanentError, match="SMTPUTF8"):
        build_message(mail, to_addr="jürgen@halt.nl", to_name="J", sender="ketenhub@halt.nl", now=NOW)


@pytest.mark.parametrize(
    "address",
    [
        "zoe.jansen@halt.nl",
        "x@bücher.de",  # sent in its IDNA form
        "o'brien+halt@münchen.de",
        "zoë.jansen@halt.nl",  # SMTPUTF8 would be needed
        "jürgen@halt.nl",
        "ana@ü..nl",  # an empty label: no IDNA form
        f"ana@{'ü' * 64}.nl",  # a label too long
    ],
)
def test_the_directory_takes_an_address_exactly_when_the_mail_connector_can_send_to_it(address: str) -> None:
    """The directory took addresses the connector refuses when sending, so that every mail for that
    caseworker was dead-lettered; it checks what the connector checks, no more."""
    assert re.fullmatch(EMAIL_PATTERN, address)  # an `Email`, as the directory's model takes it
    mail = MailNotification(
        recipient_caseworker_id="cw-x", template="match", subject="Match", body_text="x", case_reference="s"
    )
    try:
        build_message(mail, to_addr=address, to_name="Zoë", sender="ketenhub@halt.nl", now=NOW)
    except (PermanentError, UnicodeError):
        sendable = False
    else:
        sendable = True
    assert (email_problem(address) is None) == sendable


# What a MailNotification takes: no lone surrogate, nothing that looks like a BSN, a subject of at
# most 200 characters (the model refuses the rest, which is tested with the model).
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=300).filter(
    lambda t: not contains_bsn(t)
)
_SUBJECT = _TEXT.filter(lambda t: len(t) <= 200 and bool(t.split()))


@settings(max_examples=300, deadline=None)
@given(subject=_SUBJECT, name=_TEXT, text=_TEXT, html=st.none() | _TEXT)
def test_any_subject_name_and_bodies_read_back_as_sent(
    subject: str, name: str, text: str, html: str | None
) -> None:
    mail = MailNotification(
        recipient_caseworker_id="cw-x", template="match", subject=subject, body_text=text,
        body_html=html, case_reference="sig-1",
    )  # fmt: skip
    out = build_message(mail, to_addr="x@halt.nl", to_name=name, sender="ketenhub@halt.nl", now=NOW)
    assert out.data.isascii() and all(len(line) <= 998 for line in out.data.split(b"\n"))
    msg = BytesParser(policy=policy.default).parsebytes(out.data)
    assert not msg.defects
    assert msg["Subject"] == " ".join(subject.split())
    assert msg["To"].addresses[0].addr_spec == "x@halt.nl"
    shown = msg["To"].addresses[0].display_name
    assert shown == " ".join(name.split()) or shown.endswith("…")
    lines = {"plain": text, "html": html}
    for subtype in ("plain", "html") if html else ("plain",):
        part = msg.get_body((subtype,))
        assert part is not None and not part.defects
        assert part.get_content() == lines[subtype].replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=200, deadline=None)
@given(
    transaction_id=st.uuids().map(str)
    | st.text(min_size=12, max_size=100).filter(str.isprintable)  # an Envelope's: printable, to 100
    | st.just("123456782")  # nine digits that pass the elfproef: a BSN
)
@example(transaction_id="Content-Type")  # text every mail holds anyway: the oracle counts, not finds
def test_the_transaction_id_header_is_a_uuid_and_never_a_partners_text(transaction_id: str) -> None:
    mail = MailNotification(
        recipient_caseworker_id="cw-x", template="notice", subject="Overdracht", body_text="Wacht.",
        case_reference="HO-1",
    )  # fmt: skip
    out = build_message(
        mail, to_addr="x@halt.nl", to_name="X", sender="k@halt.nl", now=NOW, transaction_id=transaction_id
    )
    msg = BytesParser(policy=policy.default).parsebytes(out.data)
    assert not msg.defects and msg[NOTIFICATION_HEADER] == mail.notification_id  # still a header after it
    carried = msg[TRANSACTION_HEADER]
    assert str(uuid.UUID(carried)) == carried.lower()
    assert carried == header_transaction_id(transaction_id)  # the same id in, the same id out
    if carried != transaction_id:  # not a UUID: a partner's text, which could hold a BSN or a name
        other = str(uuid.UUID(int=0))  # the same mail under another transaction id, header and all
        without = build_message(
            mail, to_addr="x@halt.nl", to_name="X", sender="k@halt.nl", now=NOW, transaction_id=other
        )
        # no more often than there (text such as "Content-Type" is in every mail)
        assert out.data.decode("ascii").count(transaction_id) <= without.data.decode("ascii").count(
            transaction_id
        )
