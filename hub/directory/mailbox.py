"""Whether the hub can send mail to a caseworker's address: the directory takes no other.

The mail connector speaks SMTP without SMTPUTF8 (connectors/mail/message.py): the part before the @
must be ASCII, and a domain outside ASCII goes out in its IDNA form, so it must have one. An address
it cannot send to would dead-letter every mail for that caseworker, and for those they stand in for.
Only the directory checks this: a professional's contact details elsewhere (a referrer, a counterpart
in the Verwijsindex) are passed on as given, not mailed by the hub.
"""

from __future__ import annotations

# What the directory takes, for a refusal's `allowed`
ALLOWED = (
    "een e-mailadres met voor de @ alleen ASCII-tekens (geen letter met accent of trema) en na de @ een "
    "domeinnaam"
)


def email_problem(address: str) -> str | None:
    """Why the hub cannot send mail to `address`, a valid `Email` (in Dutch, never quoting it), else None."""
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return (
            "het deel voor de @ heeft een teken buiten ASCII (zoals ë of é), en daarheen kan de hub geen "
            "mail versturen; vul het adres in zoals het mailsysteem het zonder zulke tekens kent"
        )
    if not domain.isascii():
        try:
            domain.encode("idna")
        except UnicodeError:
            return (
                "het deel na de @ is geen domeinnaam die de hub kan omzetten (IDNA), zoals een lege of te "
                "lange naam tussen twee punten; controleer het adres"
            )
    return None
