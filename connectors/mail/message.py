"""A MailNotification as an RFC 5322 message: multipart/alternative, a Message-ID derived from its id."""

from __future__ import annotations

from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from schemas.notification import MailNotification

NOTIFICATION_HEADER = "X-Ketenhub-Notification-Id"


def message_id_for(notification_id: str, sender: str) -> str:
    """The same Message-ID for every (re)send of one notification: receivers can drop a repeat."""
    domain = sender.rpartition("@")[2] or "ketenhub.invalid"
    return f"<{notification_id}.ketenhub@{domain}>"


def build_message(
    mail: MailNotification, *, to_addr: str, to_name: str, sender: str, now: datetime
) -> EmailMessage:
    """Plain text with an HTML alternative (when there is one), UTF-8, with Date and Message-ID."""
    msg = EmailMessage()
    msg["From"] = Address(display_name="ketenhub (Halt Den Haag)", addr_spec=sender)
    msg["To"] = Address(display_name=to_name, addr_spec=to_addr)
    msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_for(mail.notification_id, sender)
    msg[NOTIFICATION_HEADER] = mail.notification_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to the hub
    msg.set_content(mail.body_text)
    if mail.body_html:
        msg.add_alternative(mail.body_html, subtype="html")
    return msg
