"""An SMTP refusal means what its stage says: the hub's settings (wait), the address, or the message."""

from __future__ import annotations

import aiosmtplib
import pytest

from connectors.mail.problems import CONTENT, OUTAGE, REFUSED, kind_from_text, problem_kind, problem_reason
from connectors.mail.refusals import ContentRefused, SettingsRefused
from connectors.mail.smtp import classify
from hub.errors import PermanentError, TransientError

ADDRESS = "ilse@halt.nl"  # a server's reply may echo the recipient's (or any) address
LOGIN = ("KETENHUB_SMTP__USERNAME", "KETENHUB_SMTP__PASSWORD")


def _rcpt(code: int) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, f"<{ADDRESS}>", ADDRESS)])


# stage -> (the error at that stage, whether it came while connecting, the settings its message names)
SETTINGS: dict[str, tuple[Exception, bool, tuple[str, ...]]] = {
    "AUTH 535": (aiosmtplib.SMTPAuthenticationError(535, f"5.7.8 bad login for {ADDRESS}"), False, LOGIN),
    "AUTH 535, connecting": (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad login"), True, LOGIN),
    "AUTH: no method in common": (
        aiosmtplib.SMTPException("No suitable authentication method found."),
        True,
        LOGIN,
    ),
    "STARTTLS 554": (
        aiosmtplib.SMTPResponseException(554, "5.7.0 TLS not available"),
        True,
        ("KETENHUB_SMTP__TLS",),
    ),
    "HELO 550": (
        aiosmtplib.SMTPHeloError(550, f"5.7.1 {ADDRESS} says: not you"),
        False,
        ("KETENHUB_SMTP__HOST", "KETENHUB_SMTP__PORT"),
    ),
    "MAIL FROM 550": (
        aiosmtplib.SMTPSenderRefused(550, f"5.7.1 <ketenhub@halt.nl> for {ADDRESS}", "ketenhub@halt.nl"),
        False,
        ("KETENHUB_SMTP__SENDER",),
    ),
    "MAIL FROM 530 (a login wanted)": (
        aiosmtplib.SMTPSenderRefused(530, "5.7.0 authentication required", "ketenhub@halt.nl"),
        False,
        ("KETENHUB_SMTP__SENDER", *LOGIN),
    ),
}


@pytest.mark.parametrize("stage", SETTINGS)
def test_a_refusal_of_the_hubs_settings_waits_and_names_what_to_check(stage: str) -> None:
    exc, connecting, settings = SETTINGS[stage]
    error = classify(exc, connecting=True) if connecting else classify(exc)
    assert isinstance(error, SettingsRefused) and isinstance(error, TransientError)  # the ladder retries it
    assert problem_kind(error) == OUTAGE  # past the ladder: never "correct the caseworker's address"
    said = str(error)
    assert all(setting in said for setting in settings), said
    assert ADDRESS not in said and "ketenhub@halt.nl" not in said
    assert len(said) <= 300  # whole in the console's last error and the parked row
    assert kind_from_text(said) == OUTAGE
    assert problem_reason(OUTAGE, said, "notice").startswith(
        "mail niet verstuurd, de SMTP-instellingen van de hub werden geweigerd: "
    )


@pytest.mark.parametrize(
    "exc",
    [
        aiosmtplib.SMTPAuthenticationError(454, "4.7.0 temporary authentication failure"),
        aiosmtplib.SMTPSenderRefused(451, "4.3.0 try again later", "ketenhub@halt.nl"),
        aiosmtplib.SMTPDataError(452, "4.3.1 insufficient system storage"),
        aiosmtplib.SMTPResponseException(421, "4.3.2 closing"),
    ],
    ids=["AUTH 454", "MAIL FROM 451", "DATA 452", "421"],
)
def test_a_4xx_at_any_stage_is_a_passing_failure(exc: aiosmtplib.SMTPResponseException) -> None:
    error = classify(exc)
    assert type(error) is TransientError and problem_kind(error) == OUTAGE
    assert str(exc.code) in str(error)


def test_only_a_5xx_on_rcpt_refuses_the_address() -> None:
    error = classify(_rcpt(550))
    assert isinstance(error, PermanentError) and problem_kind(error) == REFUSED
    assert ADDRESS not in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        aiosmtplib.SMTPDataError(554, f"5.6.0 message content rejected for {ADDRESS}"),
        aiosmtplib.SMTPSenderRefused(552, "5.3.4 message size exceeds fixed limit", "ketenhub@halt.nl"),
    ],
    ids=["DATA 554", "MAIL FROM 552 (too large)"],
)
def test_a_refused_message_is_its_own_problem_not_the_address(exc: aiosmtplib.SMTPResponseException) -> None:
    error = classify(exc)
    assert isinstance(error, ContentRefused) and isinstance(error, PermanentError)
    assert problem_kind(error) == CONTENT != REFUSED
    said = str(error)
    assert str(exc.code) in said and ADDRESS not in said
    assert kind_from_text(said) == CONTENT
    reason = problem_reason(CONTENT, said, "notice")
    assert "niet om het adres" in reason and ADDRESS not in reason
