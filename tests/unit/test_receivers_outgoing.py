"""What leaves for a receiver: its own `youth_ref` in place of the hub's youth key (and its own refs in
place of the referral's and consent's ids), byte for byte the same at every attempt."""

from __future__ import annotations

import pytest

from connectors.receivers.outgoing import for_receiver
from hub.errors import PermanentError
from schemas.envelope import Envelope
from schemas.pseudonym import receiver_ref, youth_key, youth_ref

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
    assert list(out.payload) == ["handover_id", "referral_ref", "youth_ref", "receiver_organisation", "data"]
    assert out.payload["youth_ref"] == youth_ref(SECRET, "jongerenwerk-dh", KEY)
    assert out.payload["referral_ref"] == receiver_ref(SECRET, "jongerenwerk-dh", "referral", "r-1")
    assert KEY.encode() not in out.to_bytes() and b"r-1" not in out.to_bytes()
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


def test_two_receivers_of_one_referral_under_one_consent_share_no_id_of_the_hubs() -> None:
    """The referral's and the consent's ids went out as they were: a receiver whose consent left out
    PERSONALIA could join on them what another got under a consent covering the BSN."""
    outs = [
        for_receiver(dispatched(org, consent_id="c-1", handover_id=f"h-{org}"), SECRET).payload
        for org in ("jongerenwerk-dh", "wijkteam-dh")
    ]
    for name in ("referral_ref", "consent_ref", "youth_ref", "handover_id"):
        assert outs[0][name] != outs[1][name]
    assert not {"referral_id", "consent_id", "youth_key"} & (outs[0].keys() | outs[1].keys())
    again = for_receiver(dispatched("wijkteam-dh", consent_id="c-1", handover_id="h-2"), SECRET).payload
    assert (again["referral_ref"], again["consent_ref"]) == (outs[1]["referral_ref"], outs[1]["consent_ref"])
    no_consent = for_receiver(dispatched("wijkteam-dh", consent_id=None), SECRET).payload
    assert no_consent["consent_ref"] is None  # a handover on a legal basis, without a consent
