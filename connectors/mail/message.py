"""A MailNotification as an RFC 5322 message: multipart/alternative, a Message-ID derived from its id.

The message has one fixed shape (headers, a plain part, an optional HTML part, both UTF-8 in
quoted-printable), so it is written out directly and handed to SMTP as bytes with its envelope
addresses. The standard library's generators cost 2-3 ms a mail here: every header is folded
through `email.header.Header`, an encoded subject is split in quadratic time, and a multipart's
boundary check compiles a fresh regular expression per message. Quoted-printable keeps ASCII text
readable on the wire (and greppable in the sink), unlike base64. Lines end in LF, as the standard
library writes them; aiosmtplib sends them as CRLF. Tests read every message back with the
standard library's parser.

Rule 19: the message carries the transaction id it was sent under, the one the audit log records
for it (`mail.sent`), in `X-Ketenhub-Transaction-Id`: a name of the hub's own, as the notification
id's beside it, not `Fsc-Transaction-Id`, which is the FSC header of an HTTP call (a mail is none).
A header travels with the mail into its reader's mailbox, so only a UUID goes in as it is (the hub
makes its transaction ids so, and an HTTP partner's must be one); any other id (a Kafka partner's,
free-form, which could hold a BSN or a name) goes in as a UUID derived from it, by the formula of
`schemas.envelope.trace_id`.
"""

from __future__ import annotations

import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, formataddr

from hub.errors import PermanentError
from schemas.envelope import new_id
from schemas.notification import MailNotification

NOTIFICATION_HEADER = "X-Ketenhub-Notification-Id"
TRANSACTION_HEADER = "X-Ketenhub-Transaction-Id"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
FROM_NAME = "ketenhub (Halt Den Haag)"
LINE = 78  # RFC 5322: lines should stay within 78 characters
WORD = 75  # RFC 2047: an encoded word is at most 75 characters
_PREFIX, _SUFFIX = "=?utf-8?q?", "?="
# RFC 2047 Q-encoding: the characters that may stand for themselves in any header context.
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q = {b: chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256)}


@dataclass(frozen=True)
class OutgoingMail:
    """What goes to the SMTP server: the envelope addresses and the message as bytes."""

    sender: str
    recipients: list[str]
    data: bytes
    message_id: str


def message_id_for(notification_id: str, sender: str) -> str:
    """The same Message-ID for every (re)send of one notification: receivers can drop a repeat."""
    domain = sender.rpartition("@")[2] or "ketenhub.invalid"
    return f"<{notification_id}.ketenhub@{domain}>"


def header_transaction_id(transaction_id: str) -> str:
    """The transaction id as a mail header carries it: a UUID as it is, any other text as the UUID
    derived from it (by the formula of `schemas.envelope.trace_id`), never the text itself."""
    if _UUID.fullmatch(transaction_id):
        return transaction_id
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ketenhub:transaction:{transaction_id}"))


def _one_line(value: str) -> str:
    """Whitespace (a line break above all) as single spaces: a header value never starts a new header."""
    return " ".join(value.split())


def _encoded_words(value: str, first: int) -> list[str]:
    """`value` as RFC 2047 Q-encoded words of at most 75 characters (the first at most `first`),
    never splitting a character's bytes over two words."""
    words, chunk, room = [], "", first - len(_PREFIX) - len(_SUFFIX)
    for ch in value:
        code = "".join(_Q[b] for b in ch.encode("utf-8"))
        if chunk and len(chunk) + len(code) > room:
            words.append(_PREFIX + chunk + _SUFFIX)
            chunk, room = "", WORD - len(_PREFIX) - len(_SUFFIX)
        chunk += code
    words.append(_PREFIX + chunk + _SUFFIX)
    return words


def _fold(name: str, words: list[str], sep: str) -> str:
    """`Name: w1 w2 ...` folded before a word where a line would pass 78 characters. `sep` is what
    stands between two words when unfolded: a space between plain words, nothing between encoded
    ones (RFC 2047 drops the whitespace between adjacent encoded words)."""
    lines, line = [], f"{name}:"
    for i, word in enumerate(words):
        gap = " " if i == 0 else sep or " "
        if i > 0 and len(line) + len(gap) + len(word) > LINE:
            lines.append(line)
            line = ""
        line += gap + word
    lines.append(line)
    return "\n".join(lines)


def _text(name: str, value: str) -> str:
    """An unstructured header (the subject) on one logical line. ASCII folds between words; a word
    too long to fold, or any text outside ASCII, is written as encoded words, which fold anywhere."""
    value = _one_line(value)
    words = value.split(" ")
    if value.isascii() and all(len(word) <= 60 for word in words):
        return _fold(name, words, " ")
    return _fold(name, _encoded_words(value, LINE - len(name) - 2), "")


def _address(name: str, addr: str) -> tuple[str, str]:
    """(`Name <addr>`, addr): an ASCII name quoted as needed, another one as one encoded word; a domain
    outside ASCII in its IDNA form. A local part outside ASCII needs SMTPUTF8: refused."""
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        raise PermanentError("the recipient's address has a local part outside ASCII (needs SMTPUTF8)")
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    addr, name = f"{local}@{domain}", _one_line(name)
    if name.isascii():
        return formataddr((name, addr)), addr
    # One encoded word (RFC 2047: at most 75 characters): mail clients disagree on the spaces
    # between several words in a name. A name too long for one is shortened, word by word.
    words, shown = name.split(), name
    while len(encoded := _encoded_words(shown, WORD)) > 1:
        if len(words) > 1:
            words.pop()
            shown = " ".join(words) + " …"
        else:
            shown = shown[: len(shown) // 2] + "…"
    return f"{encoded[0]} <{addr}>", addr


def _part(text: str, subtype: str) -> str:
    """A text part: UTF-8 in quoted-printable, lines of at most 76 characters."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    body = binascii.b2a_qp(lines.encode("utf-8"), istext=True).decode("ascii")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\n'
        "Content-Transfer-Encoding: quoted-printable\n"
        f"\n{body}"
    )


def build_message(
    mail: MailNotification,
    *,
    to_addr: str,
    to_name: str,
    sender: str,
    now: datetime,
    transaction_id: str | None = None,
) -> OutgoingMail:
    """Plain text with an HTML alternative (when there is one), UTF-8, with Date and Message-ID, and
    the transaction id when one is given (the mail connector always gives its message's)."""
    message_id = message_id_for(mail.notification_id, sender)
    to, recipient = _address(to_name, to_addr)
    headers = [
        f"From: {formataddr((FROM_NAME, sender))}",
        _fold("To", to.split(" "), " "),
        _text("Subject", mail.subject),
        f"Date: {format_datetime(now)}",
        f"Message-ID: {message_id}",
        f"{NOTIFICATION_HEADER}: {mail.notification_id}",
        *([f"{TRANSACTION_HEADER}: {header_transaction_id(transaction_id)}"] if transaction_id else []),
        "Auto-Submitted: auto-generated",  # RFC 3834: no out-of-office replies to the hub
        "MIME-Version: 1.0",
    ]
    plain = _part(mail.body_text, "plain")
    if mail.body_html:
        # "=_" never occurs in quoted-printable text, so the boundary cannot occur in a part
        boundary = f"=_ketenhub_{new_id()}"
        html = _part(mail.body_html, "html")
        headers.append(f'Content-Type: multipart/alternative;\n boundary="{boundary}"')
        body = f"--{boundary}\n{plain}\n--{boundary}\n{html}\n--{boundary}--\n"
        text = "\n".join(headers) + "\n\n" + body
    else:
        text = "\n".join(headers) + "\n" + plain
    return OutgoingMail(
        sender=sender, recipients=[recipient], data=text.encode("ascii"), message_id=message_id
    )
