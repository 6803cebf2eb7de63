"""What leaves for a receiver: its own `youth_ref` in place of the hub's youth key, byte for byte the
same at every attempt."""

from __future__ import annotations

import pytest

from connectors.receivers.outgoing import for_receiver
from hub.errors import PermanentError
from schemas.envelope import Envelope
from schemas.pseudonym import youth_key, youth_ref

SECRET = "test-secret-that-is-long-enough-for-the-hub-0123456789"
KEY = youth_key(SECRET, "111222333")


def dispatched(organisation: str, **payload: object) -> Envelope:
    body = {
        "handover_id": "h-1",
        "referral_id": "r-1",
        "youth_key": KEY,
        "receiver_organisation": organisation,
    }
    return Envelope.new("Handover", body | payload, transaction_id="tx-1", correlation_id="h-1")


def test_the_receiver_gets_its_youth_ref_where_the_youth_key_was_and_all_else_as_it_was() -> None:
    message = dispatched("jongerenwerk-dh", data={"PERSONALIA": {"bsn": "111222333"}})
    out = for_receiver(message, SECRET)
    assert list(out.payload) == ["handover_id", "referral_id", "youth_ref", "receiver_organisation", "data"]
    assert out.payload["youth_ref"] == youth_ref(SECRET, "jongerenwerk-dh", KEY)
    assert KEY.encode() not in out.to_bytes()
    assert out.model_dump(exclude={"payload"}) == message.model_dump(exclude={"payload"})
    assert message.payload["youth_key"] == KEY  # the hub's own message is left as it was


def test_the_same_message_gives_the_same_bytes_and_each_receiver_another_ref() -> None:
    message = dispatched("jongerenwerk-dh")
    replayed = Envelope.from_bytes(message.to_bytes())  # as read back from a dead letter
    assert for_receiver(replayed, SECRET).to_bytes() == for_receiver(message, SECRET).to_bytes()
    refs = {
        for_receiver(dispatched(org), SECRET).payload["youth_ref"]
        for org in ("jongerenwerk-dh", "wijkteam-dh", "jeugdhulp-dh")
    }
    assert len(refs) == 3 and KEY not in refs
    assert youth_ref("another-secret-that-is-long-enough-0123456789", "wijkteam-dh", KEY) not in refs


def test_a_dispatch_message_without_a_youth_key_is_a_permanent_error() -> None:
    message = Envelope.new(
        "Handover", {"handover_id": "h-1", "receiver_organisation": "x"}, transaction_id="t"
    )
    with pytest.raises(PermanentError):
        for_receiver(message, SECRET)
