"""The commands on `verwijsindex.signal.v1`: envelope types and their payload models.

Every command is keyed by the pseudonymous youth key, so the connector handles one youth's commands
in order (a withdrawal never overtakes its registration).
"""

from __future__ import annotations

from typing import Any

from schemas._base import CanonicalModel, Code, as_code
from schemas.caseworker import ContactDetails
from schemas.envelope import Envelope
from schemas.signal import VerwijsindexSignal, WithdrawalReason

REGISTER = "RegisterSignal"  # payload: VerwijsindexSignal (signal_id set); only rule-11 fields
WITHDRAW = "WithdrawSignal"  # payload: WithdrawSignal
CHANGE_CONTACT = "ChangeSignalContact"  # payload: ChangeSignalContact
COMMAND_TYPES = (REGISTER, WITHDRAW, CHANGE_CONTACT)
SOURCE = "ketenhub.signals"


class WithdrawSignal(CanonicalModel):
    """Withdraw a signal with its rule-15 reason."""

    signal_id: Code
    reason: WithdrawalReason


class ChangeSignalContact(CanonicalModel):
    """Give a signal a new contact person (borging, rule 17)."""

    signal_id: Code
    caseworker_id: Code
    contact: ContactDetails


def _envelope(type_: str, payload: dict[str, Any], signal_id: str, transaction_id: str) -> Envelope:
    return Envelope.new(
        type_=type_, transaction_id=transaction_id, correlation_id=signal_id, source=SOURCE, payload=payload
    )


def register_command(signal: VerwijsindexSignal, transaction_id: str) -> Envelope:
    """The register command for a stored signal."""
    assert signal.signal_id is not None
    return _envelope(REGISTER, signal.model_dump(mode="json"), signal.signal_id, transaction_id)


def withdraw_command(signal_id: str, reason: WithdrawalReason, transaction_id: str) -> Envelope:
    """The withdraw command."""
    body = WithdrawSignal(signal_id=signal_id, reason=reason)
    return _envelope(WITHDRAW, body.model_dump(mode="json"), signal_id, transaction_id)


def change_contact_command(
    signal_id: str, caseworker_id: str, contact: ContactDetails, transaction_id: str
) -> Envelope:
    """The change-contact command."""
    body = ChangeSignalContact(signal_id=signal_id, caseworker_id=caseworker_id, contact=contact)
    return _envelope(CHANGE_CONTACT, body.model_dump(mode="json"), signal_id, transaction_id)


def signal_id_of(message: Envelope) -> str | None:
    """The signal a command is about (its correlation id), without parsing the payload; None when it
    names none that could be one (a command that failed validation may hold anything there)."""
    return as_code(message.correlation_id or (message.payload.get("signal_id") if message.payload else None))
