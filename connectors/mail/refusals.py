"""What an SMTP failure means for the mail, by the stage it came at: retry, dead letter, or neither.

- Connecting, the greeting (EHLO/HELO), the login (AUTH) and the sender (MAIL FROM) are the hub's own
  settings: a 5xx there refuses every mail alike, and says nothing about the mail. `SettingsRefused`,
  a TransientError: the mails wait on the retry ladder while the settings are put right, and the
  error names the settings to check.
- A 5xx on RCPT is the one refusal of an address (a PermanentError: the DLQ, "correct the address").
- A 5xx on DATA refuses the message itself (its content, or its size on MAIL FROM): `ContentRefused`,
  a PermanentError that does not blame the address.
- The message was transmitted and no answer came: `OutcomeUnknown` (smtp.py says why).
- 4xx and connection trouble: TransientError.

No text here carries an address: a server's reply may echo one, and it is masked.
"""

from __future__ import annotations

import re

import aiosmtplib

from hub.errors import PermanentError, TransientError

UNKNOWN_OUTCOME = (
    "the SMTP server did not answer after the message was sent (the connection was lost, or "
    "smtp.answer_timeout_s passed); it may have been delivered, so it is not sent again automatically; "
    "replay this dead letter to send it again"
)
# The opening words of every SettingsRefused and ContentRefused: a dead letter's text says which it was.
SETTINGS_REFUSED = "the SMTP server refused the hub's own settings"
CONTENT_REFUSED = "the SMTP server refused the message itself, not its address"
_LOGIN = "KETENHUB_SMTP__USERNAME and KETENHUB_SMTP__PASSWORD"
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")


class OutcomeUnknown(PermanentError):
    """The message went out and no answer came: it may have been delivered. Not retried (the DLQ)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{UNKNOWN_OUTCOME} ({type(cause).__name__})")


class SettingsRefused(TransientError):
    """The SMTP server refused the hub's login, greeting or sender: no mail goes until the settings are
    corrected, and none is dead-lettered for it at once (they wait on the retry ladder)."""


class ContentRefused(PermanentError):
    """The SMTP server refused the message itself (5xx on DATA, or too large): not its address."""


def _said(exc: BaseException) -> str:
    """What the server (or aiosmtplib) said, short, with any address in it masked."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"SMTP {exc.code}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return _ADDRESS.sub("(address)", text)[:100]


def _settings(what: str, exc: BaseException, check: str) -> SettingsRefused:
    return SettingsRefused(f"{SETTINGS_REFUSED}, {what} ({_said(exc)}): check {check}")


def classify(exc: BaseException, *, connecting: bool = False) -> Exception:
    """An aiosmtplib (or socket) error as TransientError or PermanentError, by its stage (the error's
    type; `connecting`: it came while connecting, logging in included); never echoes an address."""
    if isinstance(exc, OSError):  # connection refused, dropped, timed out, or a refusing greeting
        return TransientError(f"SMTP server unreachable ({type(exc).__name__})")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):  # RCPT: the address's own refusal
        codes = [r.code for r in exc.recipients]
        kind = PermanentError if codes and all(c >= 500 for c in codes) else TransientError
        return kind(f"SMTP server refused the recipient ({', '.join(map(str, codes))})")
    code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
    if code is not None and code < 500:  # 4xx (or an answer out of turn): try again later
        return TransientError(_said(exc))
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _settings("its login", exc, f"the SMTP user name and password ({_LOGIN})")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        if code == 552:  # RFC 1870: the size announced on MAIL FROM is more than the server takes
            return ContentRefused(f"{CONTENT_REFUSED}: it is too large ({_said(exc)})")
        return _settings(
            "its sender", exc, f"the sender address (KETENHUB_SMTP__SENDER), and the login ({_LOGIN})"
        )
    if isinstance(exc, aiosmtplib.SMTPHeloError) or connecting:  # the greeting, STARTTLS, a login method
        return _settings(
            "connecting", exc, f"KETENHUB_SMTP__HOST, KETENHUB_SMTP__PORT, KETENHUB_SMTP__TLS and {_LOGIN}"
        )
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return ContentRefused(f"{CONTENT_REFUSED} ({_said(exc)})")
    if code is not None:
        return PermanentError(_said(exc))
    return TransientError(f"SMTP error ({type(exc).__name__})")
