"""What an operator sees of a dead letter's payload: personal data masked, whatever the payload."""

from __future__ import annotations

import json
import time

from pydantic_core import to_json

from hub.ops.masking import MASK, MAX_DEPTH, mask_text, show_payload

BSN, NAME, SURNAME = "111222333", "Jan", "Jansen"
RECORD = {
    "procesVerbaalNummer": "PL1500-2026-0001",
    "verdachte": {"bsn": BSN, "voornamen": NAME, "achternaam": SURNAME, "adres": {"straat": "Spui 1"}},
    "eerdereHaltverwijzingen": 0,
}


def _shown(payload: object) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload)


def test_a_record_is_shown_masked_with_its_structure() -> None:
    shown = show_payload(json.dumps(RECORD).encode(), unmasked=False)
    assert shown["verdachte"]["achternaam"] == MASK and shown["verdachte"]["bsn"] == MASK
    assert shown["procesVerbaalNummer"] == "PL1500-2026-0001"
    assert show_payload(json.dumps(RECORD).encode(), unmasked=True) == RECORD


def test_a_record_cut_off_is_shown_as_text_without_its_names() -> None:
    """Text that is not JSON used to be shown with only number patterns masked: the names in a
    partner record cut off in the middle were shown as they were."""
    whole = json.dumps(RECORD, indent=2)
    for cut in (whole[: whole.index(SURNAME) + 3], whole[:-5], whole.replace('"bsn"', '"bsn "', 1)[:-1]):
        shown = show_payload(cut.encode(), unmasked=False)
        assert isinstance(shown, str)
        for secret in (BSN, NAME, SURNAME[:3], "Spui"):
            assert secret not in shown, (secret, shown)
        assert "PL1500-2026-0001" in shown  # what is no personal data stays readable


def test_json_too_deep_or_with_an_overlong_number_is_shown_as_masked_text() -> None:
    """Both were a 500 for the operator: json.loads raised RecursionError (nesting deeper than it
    recurses) or ValueError (an integer of more than 4,300 digits), and masking recursed as deep as
    the value was nested."""
    inner = json.dumps({"achternaam": SURNAME, "bsn": BSN})
    for depth in (700, 100_000):  # masking recurses too deep / json.loads does
        raw = ("[" * depth + inner + "]" * depth).encode()
        if depth == 700:
            assert json.loads(raw)  # readable; masking it recursed twice as deep
        shown = show_payload(raw, unmasked=False)
        assert isinstance(shown, str) and SURNAME not in shown and BSN not in shown
    overlong = json.dumps(RECORD)[:-1] + ', "x": ' + "7" * 5000 + "}"
    shown = show_payload(overlong.encode(), unmasked=False)
    assert isinstance(shown, str) and SURNAME not in shown and BSN not in shown
    assert show_payload(overlong.encode(), unmasked=True) == overlong


def test_json_deeper_than_the_answer_can_hold_is_shown_as_text() -> None:
    """Nested 255-600 deep, json.loads and masking both managed, and the answer's encoder refused
    it (PydanticSerializationError, a 500), unmasked up to json.loads' own limit too."""
    inner = json.dumps({"achternaam": SURNAME, "bsn": BSN})
    for depth in (199, 300, 600):
        raw = ("[" * depth + inner + "]" * depth).encode()
        masked, plain = show_payload(raw, unmasked=False), show_payload(raw, unmasked=True)
        if depth < MAX_DEPTH:
            assert isinstance(masked, list) and isinstance(plain, list)
        else:
            assert isinstance(masked, str) and isinstance(plain, str)
        to_json({"payload": masked, "masked": True})  # what the answer's encoder does
        to_json({"payload": plain, "masked": False})
        assert SURNAME not in str(masked) and BSN not in str(masked)


def test_keyed_text_masks_personal_values_only() -> None:
    text = '{"naam": "A \\"B\\" C", "telefoon": 612345678, "geboortedatum": null, "status": "open"}'
    masked = mask_text(text)
    assert masked == f'{{"naam": "{MASK}", "telefoon": "{MASK}", "geboortedatum": null, "status": "open"}}'
    # a list under a personal key (given names), whole or cut off in the middle
    for names in ('{"voornamen": ["Johannes", "Pieter"], "n": [1, 2]}', '{"voornamen": ["Johannes", "Pie'):
        assert "Johannes" not in mask_text(names) and "Pie" not in mask_text(names), mask_text(names)
    assert mask_text('{"voornamen": ["Jan"], "n": [1, 2]}') == f'{{"voornamen": "{MASK}", "n": [1, 2]}}'


def test_masking_time_grows_with_the_payload_not_its_square() -> None:
    """The e-mail pattern was tried at every position of a run of name characters: a 40 KB run of
    letters held the event loop 4 s, a 1 MB one would have held it for most of an hour. A 100 KB
    run took about 25 s; it now takes milliseconds. The bound is a hundred times what it needs."""
    for run in (b"a" * 100_000, b"a." * 50_000, b"7" * 100_000):
        started = time.perf_counter()
        assert show_payload(run, unmasked=False)
        assert time.perf_counter() - started < 3.0


def test_where_a_youth_lives_their_sex_and_a_gps_position_are_masked() -> None:
    boa = {
        "locatie": {"lat": 52.0705, "lon": 4.3007, "straat": "Spui", "omschrijving": "bij de tramhalte"},
        "jeugdige": {"geslacht": "M", "woonplaats": "Den Haag", "gemeente": "Den Haag"},
        "vertegenwoordiger": {"relatie": "voogd"},
        "flat": 3,
    }
    shown = show_payload(json.dumps(boa).encode(), unmasked=False)
    assert shown["locatie"]["lat"] == shown["locatie"]["lon"] == MASK
    assert shown["jeugdige"]["geslacht"] == shown["jeugdige"]["woonplaats"] == MASK
    assert shown["locatie"]["omschrijving"] == "bij de tramhalte"
    assert shown["vertegenwoordiger"]["relatie"] == "voogd" and shown["flat"] == 3  # "lat" inside a word
    cut_off = show_payload(json.dumps(boa).encode()[:-30], unmasked=False)  # not JSON: read as text
    assert isinstance(cut_off, str) and "52.0705" not in cut_off and '"woonplaats": "Den Haag"' not in cut_off
