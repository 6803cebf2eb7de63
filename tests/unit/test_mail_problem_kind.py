"""Which problem a dead-lettered mail is, by what its last attempt raised: each asks for another fix."""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy.exc import OperationalError

import hub
from connectors.mail.problems import CONTENT, OUTAGE, REFUSED, UNKNOWN, problem_kind
from connectors.mail.smtp import OutcomeUnknown, classify
from hub.directory import CaseworkerNotFound
from hub.errors import PermanentError
from hub.notify.service import NO_RECIPIENT, NoReachableRecipient


def _refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, "no", "x@halt.nl")])


CASES = {
    "connection refused": (classify(ConnectionRefusedError()), OUTAGE),
    "could not connect": (classify(aiosmtplib.SMTPConnectError("down")), OUTAGE),
    "4xx": (classify(aiosmtplib.SMTPResponseException(451, "try again later")), OUTAGE),
    "recipient 4xx": (classify(_refused(450)), OUTAGE),
    "recipient 5xx": (classify(_refused(550)), REFUSED),
    "the hub's store": (OperationalError("SELECT 1", {}, Exception("gone")), OUTAGE),
    "5xx": (classify(aiosmtplib.SMTPResponseException(550, "mailbox unavailable")), REFUSED),
    "the message refused": (classify(aiosmtplib.SMTPDataError(554, "message refused")), CONTENT),
    "the hub's login refused": (classify(aiosmtplib.SMTPAuthenticationError(535, "bad credentials")), OUTAGE),
    "not a notification": (PermanentError("not a MailNotification: 1 error(s)"), REFUSED),
    "no answer after sending": (OutcomeUnknown(TimeoutError()), UNKNOWN),
    "nobody reads it": (NoReachableRecipient("caseworker 'a' is away, no reachable delegate"), NO_RECIPIENT),
    "not in the directory": (CaseworkerNotFound("caseworker 'a' is not in the directory"), NO_RECIPIENT),
}


@pytest.mark.parametrize("case", CASES)
def test_each_reason_a_mail_is_dead_lettered_for_is_its_own_problem(case: str) -> None:
    exc, kind = CASES[case]
    assert problem_kind(exc) == kind


def test_the_console_says_what_to_do_about_each_of_them() -> None:
    script = (Path(hub.__file__).parent / "static" / "dashboard.js").read_text()
    to_do = script[script.index("const TO_DO = {") : script.index("};", script.index("const TO_DO = {"))]
    for kind in {kind for _, kind in CASES.values()}:
        assert f"\n  {kind}: " in to_do, kind
    assert "check the SMTP server is reachable" in to_do.split(f"{OUTAGE}: ")[1].split("\n  mail_")[0]
