"""The caseworker directory: who gets mail, who may signal, absences and delegates."""

from hub.directory.service import (
    CaseworkerNotFound,
    get_caseworker,
    list_caseworkers,
    mail_recipient,
    mail_recipients,
    upsert_caseworker,
)

__all__ = [
    "CaseworkerNotFound",
    "get_caseworker",
    "list_caseworkers",
    "mail_recipient",
    "mail_recipients",
    "upsert_caseworker",
]
