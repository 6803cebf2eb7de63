"""The mail connector: MailNotifications out over SMTP, and the embedded SMTP sink for demos and tests."""

from connectors.mail.message import build_message, message_id_for
from connectors.mail.sink import MailSink, SinkMail
from connectors.mail.smtp import SmtpMailer

__all__ = ["MailSink", "SinkMail", "SmtpMailer", "build_message", "message_id_for"]
