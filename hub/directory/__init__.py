"""The caseworker directory: who gets mail, who may signal, absences and delegates."""

from hub.directory.service import (
    CaseworkerNotFound,
    create_caseworker,
    get_caseworker,
    list_caseworkers,
    lock_caseworker,
    mail_recipient,
    mail_recipients,
    replace_caseworker,
    upsert_caseworker,
)

__all__ = [
    "CaseworkerNotFound",
    "create_caseworker",
    "get_caseworker",
    "list_caseworkers",
    "lock_caseworker",
    "mail_recipient",
    "mail_recipients",
    "replace_caseworker",
    "upsert_caseworker",
]
