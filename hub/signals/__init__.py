"""Verwijsindex signals: the store, the commands on `verwijsindex.signal.v1`, the caseworker API."""

from hub.signals.service import (
    NotInformed,
    SignalNotActive,
    SignalNotFound,
    UnfitContact,
    active_signals_of,
    register_again,
    request_contact_change,
    request_withdrawal,
    store_signal,
)

__all__ = [
    "NotInformed",
    "SignalNotActive",
    "SignalNotFound",
    "UnfitContact",
    "active_signals_of",
    "register_again",
    "request_contact_change",
    "request_withdrawal",
    "store_signal",
]
