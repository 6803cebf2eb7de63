"""A ladder parses a parked row's envelope once for its lookups, its call and its record, and keeps
no more than `MESSAGES_KEPT` of them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hub.retry import records
from hub.retry.records import ParkingLot
from schemas.envelope import Envelope


def _lot() -> ParkingLot:
    lot = ParkingLot()
    lot._messages = {}
    return lot


def test_the_same_bytes_give_the_same_envelope_parsed_once() -> None:
    lot, message = _lot(), Envelope(type="RegisterSignal", payload={"signal_id": "s-1"})
    value = message.to_bytes()
    first = lot._message(value)
    assert first == message
    assert lot._message(bytes(bytearray(value))) is first  # equal bytes from another read of the row
    assert lot._message(memoryview(value)) is first  # as a driver may hand them back


def test_a_value_that_is_no_envelope_raises_and_is_not_kept() -> None:
    lot = _lot()
    for _ in range(2):
        with pytest.raises(ValidationError):
            lot._message(b'{"type": 1}')
    assert lot._messages == {}


def test_only_the_latest_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MESSAGES_KEPT", 3)
    lot = _lot()
    values = [Envelope(type="RegisterSignal", payload={"n": n}).to_bytes() for n in range(5)]
    for value in values:
        lot._message(value)
    assert list(lot._messages) == values[2:]
