"""What an operator sees of a dead letter's payload: personal data masked, whatever the payload."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic_core import to_json

from hub.ops.dlq import REPLAYED_FROM
from hub.ops.dlq_records import DeadLetter
from hub.ops.masking import MASK, MAX_DEPTH, show_headers, show_payload
from hub.spine.dlq import DLQ_EXC_MESSAGE, DLQ_FIRST_FAILURE, DLQ_HEADERS, dlq_headers
from schemas.envelope import (
    H_CORRELATION_ID,
    H_MESSAGE_ID,
    H_MESSAGE_TYPE,
    H_SOURCE,
    H_TRANSACTION_ID,
    Envelope,
)

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


def test_a_record_cut_off_is_masked_as_a_whole() -> None:
    """Text that is not JSON was shown with only the values of personal keys and number patterns
    masked: the names in a record written with single quotes were shown as they were."""
    whole = json.dumps(RECORD, indent=2)
    single_quoted = str(RECORD).encode()
    for raw in (whole[: whole.index(SURNAME) + 3].encode(), whole[:-5].encode(), single_quoted):
        shown = show_payload(raw, unmasked=False)
        assert shown.startswith(f"{MASK} (not JSON: ") and shown.endswith(f"; {len(raw)} bytes)"), shown
        for secret in (BSN, NAME, SURNAME[:3], "Spui"):
            assert secret not in shown, (secret, shown)
        assert show_payload(raw, unmasked=True) == raw.decode()
    police = b"{'naam': 'Jan Jansen'}"
    assert show_payload(police, unmasked=False) == (
        f"{MASK} (not JSON: Expecting property name enclosed in double quotes at line 1, column 2; 22 bytes)"
    )
    not_utf8 = show_payload(b'{"naam": "Jos\xe9"}', unmasked=False)
    assert not_utf8 == f"{MASK} (not JSON: not UTF-8 at byte 13; 16 bytes)"


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
        "pleegplaats": "Spui 70",
        "flat": 3,
    }
    shown = show_payload(json.dumps(boa).encode(), unmasked=False)
    assert shown == {
        "locatie": {"lat": MASK, "lon": MASK, "straat": MASK, "omschrijving": MASK},
        "jeugdige": {"geslacht": MASK, "woonplaats": MASK, "gemeente": MASK},
        "vertegenwoordiger": {"relatie": MASK},  # a foster parent or guardian says much of a youth
        "pleegplaats": MASK,
        "flat": f"{MASK} (number)",
    }
    cut_off = show_payload(json.dumps(boa).encode()[:-30], unmasked=False)  # not JSON: masked whole
    assert isinstance(cut_off, str) and "52.0705" not in cut_off and "Den Haag" not in cut_off


def _shown_values(value: object) -> list[object]:
    """The text and numbers a masked payload shows as they are."""
    if isinstance(value, dict):
        return [v for child in value.values() for v in _shown_values(child)]
    if isinstance(value, list):
        return [v for child in value for v in _shown_values(child)]
    if value is None or isinstance(value, bool) or (isinstance(value, str) and value.startswith(MASK)):
        return []
    return [value]


def test_everything_under_a_personal_key_is_masked_however_deep() -> None:
    """A personal key was not carried into what it holds: a name split in parts came back as it was."""
    payload = {
        "naam": {"eerste": "Jan", "laatste": "Jansen", "delen": [["van", {"x": "der"}]]},
        "geboorte": {"datum": "2009-05-01"},  # a date as an offence date would be shown, under birth
        "voornamen": ["Jan", "Pieter"],
        "ouders": [{"relatie": "pleegouder", "gezag": True, "code": "X1"}],
        "feitcode": "F350",
    }
    shown = show_payload(json.dumps(payload).encode(), unmasked=False)
    assert shown == {
        "naam": {"eerste": MASK, "laatste": MASK, "delen": [[MASK, {"x": MASK}]]},
        "geboorte": {"datum": MASK},
        "voornamen": [MASK, MASK],
        "ouders": [{"relatie": MASK, "gezag": True, "code": MASK}],
        "feitcode": "F350",
    }


def test_free_text_is_masked_as_a_whole_with_its_length() -> None:
    """Free text had only BSN, e-mail, phone and date patterns taken out: a name, an age and an
    address written in a sentence were shown."""
    text = "Jan de Vries (15) uit de Laan van Meerdervoort 12"
    fields = ("omschrijving", "feitomschrijving", "description", "summary", "note", "toelichting")
    payload = dict.fromkeys((*fields, "opmerking", "deferral_reason", "body_text"), text)
    shown = show_payload(json.dumps({"payload": payload}).encode(), unmasked=False)
    assert shown == {"payload": dict.fromkeys(payload, f"{MASK} (text, {len(text)} characters)")}


def test_initials_a_birth_date_and_zero_or_one_under_a_personal_key_are_masked() -> None:
    """Initials and dob were not personal keys; 0 and 1 passed a personal key as False and True."""
    payload = {"initials": "J.P.", "initialen": "J.", "dob": "2009.05.01", "huisnummer": 1, "postcode": 0}
    shown = show_payload(json.dumps(payload).encode(), unmasked=False)
    assert shown == dict.fromkeys(payload, MASK)
    flags = {"gezag": True, "oudersAkkoord": False, "telefoon": None, "email": ""}  # nothing to hide
    assert show_payload(json.dumps(flags).encode(), unmasked=False) == flags


SAMPLES = Path(__file__).parents[1] / "data"


@pytest.mark.parametrize(
    ("sample", "shown"),
    [
        (
            "politie/valid_vernieling_16jarige.json",
            ["PL1500-2025040907-2", "F350", "2025-04-09", 425.5, "851,00", 1],
        ),
        (
            "boa/valid_project_vuurwerk.json",
            ["DH-2025-00493377", "2025-12-28T19:05:00+01:00", "V236", "DH-JAARWISSELING-2526", "29-12-2025"],
        ),
        (
            "preventief/valid_wijkteam.json",
            ["WT-ESC-2025-0042", "WIJKTEAM", "03-02-2025", "online", "04-02-2025"],
        ),
    ],
)
def test_a_partner_record_shows_ids_codes_dates_and_amounts_only(sample: str, shown: list[object]) -> None:
    """What an operator needs to see why a record failed (its fields, their types, its references,
    codes, offence dates and amounts) and nothing of the youth, a parent or an officer."""
    raw = (SAMPLES / sample).read_bytes()
    masked = show_payload(raw, unmasked=False)
    assert _shown_values(masked) == shown
    assert _keys(masked) == _keys(json.loads(raw))  # every field is there, under its own name
    assert show_payload(raw, unmasked=True) == json.loads(raw)


def _keys(value: object) -> list[str]:
    if isinstance(value, dict):
        return [k for key, child in value.items() for k in (key, *_keys(child))]
    if isinstance(value, list):
        return [k for child in value for k in _keys(child)]
    return []


def test_a_message_of_the_hub_shows_its_envelope() -> None:
    """Ids (a UUID whose first part is all digits too), type, source and times of an envelope."""
    message = Envelope(
        message_id="12345678-1234-4123-8123-123456789012",
        type="Referral",
        correlation_id="PL1500-2025040907-2",
        payload={"youth": {"bsn": BSN, "given_names": NAME}, "case_reference": "PL1500-2025040907-2"},
    )
    shown = show_payload(message.to_bytes(), unmasked=False)
    assert shown["message_id"] == message.message_id and shown["transaction_id"] == message.transaction_id
    assert (shown["type"], shown["source"], shown["version"]) == ("Referral", "ketenhub", 1)
    assert shown["correlation_id"] == shown["payload"]["case_reference"] == "PL1500-2025040907-2"
    assert shown["payload"]["youth"] == {"bsn": MASK, "given_names": MASK}
    # a field that holds no personal data shows no value that may be some: a BSN, e-mail or phone
    odd = {"feitcode": BSN, "status": "jan@example.nl", "code": "06-12345678", "pleegdatum": "Jan Jansen"}
    assert _shown_values(show_payload(json.dumps(odd).encode(), unmasked=False)) == []


def test_a_senders_own_headers_are_masked_the_hubs_own_shown() -> None:
    """A dead letter's headers were shown as they came: a partner's own header may hold personal data."""
    hub = _dlq_headers("poison payload") | Envelope(type="T").header_map()
    hub[REPLAYED_FROM] = "t1.ketenhub.dlq:0:17"
    hub[H_CORRELATION_ID] = "PL1500-2025040907-2"
    own = {"x-naam": "Jan Jansen", "Message-Id": BSN, "dlq-note": "Jan"}
    assert show_headers(hub | own, unmasked=False) == hub | dict.fromkeys(own, MASK)
    assert show_headers(hub | own, unmasked=True) == hub | own


def test_the_bsn_a_dead_letter_names_is_found_in_its_key_or_its_payload() -> None:
    from hub.ops.dlq_records import bsn_in_key_or_payload

    police = json.dumps({"procesVerbaalNummer": "PL-1", "verdachte": {"bsn": "11122233 3"}}).encode()
    assert bsn_in_key_or_payload("111222333", None) == "111222333"  # the sender keyed it by BSN
    assert bsn_in_key_or_payload("pv-1", json.dumps({"verdachte": {"BSN": "12345678"}}).encode()) is None
    record = json.dumps({"n": [{"bsn": "x"}], "verdachte": {"burgerservicenummer": "10000008"}}).encode()
    assert bsn_in_key_or_payload("pv-1", record) == "010000008"  # eight digits, padded as rule 1 says
    assert (
        bsn_in_key_or_payload("pv-1", json.dumps({"jeugdige": {"bsn": "123456782"}}).encode()) == "123456782"
    )
    assert bsn_in_key_or_payload(None, police) is None  # not a BSN: a space in it, no elfproef
    assert bsn_in_key_or_payload(None, b"{'bsn': '123456782'}") is None  # not JSON: not looked into
    assert bsn_in_key_or_payload("a" * 64, None) is None  # the hub's own youth key


def _dlq_headers(message: str) -> dict[str, str]:
    """The DLQ headers the hub writes for a record that failed with `message`."""
    at = datetime(2025, 3, 12, 10, 0, 0, 123456, tzinfo=UTC)
    return dlq_headers(
        topic="t1.intake.politie",
        partition=2,
        offset=4711,
        group="g1-intake",
        exc=ValueError(message),
        attempts=3,
        first_failure=at,
        last_failure=at,
    )


STORY = "Sanne Jansen (14) woont sinds maart bij vader in Gouda"


def test_free_text_under_a_code_key_is_masked() -> None:
    """A value under a code key was shown whenever printable, up to 100 characters and without a BSN,
    e-mail or phone: a receiver's reason for refusing a handover named the youth and where she lives."""
    answer = {"payload": {"status": "GEWEIGERD", "reason": STORY}}
    shown = show_payload(json.dumps(answer).encode(), unmasked=False)
    assert shown == {"payload": {"status": "GEWEIGERD", "reason": f"{MASK} (text, {len(STORY)} characters)"}}
    keys = ("reason", "status", "code", "type", "categorie", "soort", "appVersie", "recordedBy", "source")
    for text in (STORY, "Sanne Jansen", "Sanne_Jansen_14_woont_in_Gouda_bij_haar_vader_sinds_maart_2025_xyz"):
        assert (
            _shown_values(show_payload(json.dumps(dict.fromkeys(keys, text)).encode(), unmasked=False)) == []
        )
    spaced = {"wetsartikel": "art. 2.1 APV", "article": "art. 310 Sr", "feitcode": "F 350"}
    assert _shown_values(show_payload(json.dumps(spaced).encode(), unmasked=False)) == [
        "art. 2.1 APV",
        "art. 310 Sr",
    ]
    long = {"wetsartikel": "art. 2.1 APV, Sanne Jansen", "article": STORY}
    assert _shown_values(show_payload(json.dumps(long).encode(), unmasked=False)) == []
    codes = {
        "reason": "DIEFSTAL",
        "track": "HALT_STRAF",
        "recordedBy": "cw-ilse",
        "handoverId": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "caseReference": "PL1500-2025031201-1",
        "bonnummer": "DH-2025-00493377",
        "aanmeldnummer": "WT-ESC-2025-0042",
        "projectcode": "DH-JAARWISSELING-2526",
        "rulesVersion": "2025.03.1",
    }
    assert show_payload(json.dumps(codes).encode(), unmasked=False) == codes


def test_a_hubs_header_shows_only_a_value_shaped_as_the_hub_writes_it() -> None:
    """A value under a header name the hub writes was shown whoever set it: a partner sets such names
    on its records too, with a name, a BSN, an e-mail address or a phone number in them."""
    odd = {
        H_MESSAGE_ID: "Sanne Jansen",
        H_TRANSACTION_ID: "BSN252760189",
        H_CORRELATION_ID: "252-76-0189",
        H_SOURCE: "s.jansen@mail.example",
        H_MESSAGE_TYPE: "x" * 101,
        REPLAYED_FROM: "06-12345678",
        DLQ_FIRST_FAILURE: "gisteren om tien uur",
        DLQ_HEADERS[0]: "t1.intake politie",
    }
    assert show_headers(odd, unmasked=False) == dict.fromkeys(odd, MASK)
    assert show_headers(odd, unmasked=True) == odd
    for message in ("refused 252 760 189", "mail to s.jansen@mail.example bounced", "called 06 1234 5678"):
        assert show_headers({DLQ_EXC_MESSAGE: message}, unmasked=False) == {DLQ_EXC_MESSAGE: MASK}
    written = _dlq_headers("3 validation error(s): verdachte.bsn: geen geldig BSN")
    assert show_headers(written, unmasked=False) == written


def test_a_dead_letter_in_a_list_shows_its_header_values_as_its_headers_show_them() -> None:
    """A list (`GET /ops/api/dlq`, `ketenhub dlq list`) showed the message-id and transaction-id
    headers as they came, where the letter's headers masked them: a police record's message id was
    "zaak Sanne de Vries 06-12345678"."""
    hub = _dlq_headers("poison payload") | Envelope(type="T").header_map()
    own = {H_MESSAGE_ID: "zaak Sanne de Vries 06-12345678", H_TRANSACTION_ID: "Jan Jansen melding 12"}
    letter = DeadLetter("t1.intake.politie.dlq.v1", 0, 7, 0, "pv-1", hub | own)
    listed = letter.summary()
    assert (listed["message_id"], listed["transaction_id"]) == (MASK, MASK)
    assert "Sanne" not in json.dumps(listed) and "Jansen" not in json.dumps(listed)
    headers = show_headers(letter.headers, unmasked=False)
    for field, header in (("message_id", H_MESSAGE_ID), ("transaction_id", H_TRANSACTION_ID)):
        assert listed[field] == headers[header]
    # the hub's own values stay readable; unmasked (a privacy officer, audited) all are as they came
    assert (listed["original_topic"], listed["group"], listed["error"]) == (
        "t1.intake.politie",
        "g1-intake",
        "poison payload",
    )
    assert letter.summary(unmasked=True)["message_id"] == own[H_MESSAGE_ID]
    plain = DeadLetter("t1.intake.politie.dlq.v1", 0, 8, 0, None, hub).summary()
    assert (plain["message_id"], plain["transaction_id"]) == (hub[H_MESSAGE_ID], hub[H_TRANSACTION_ID])


@pytest.mark.parametrize(
    "bsn",
    [
        *(
            "BSN252760189",
            "252760189x",
            "252 760 189",
            "252-76-0189",
            "2527.60.189",
            "BSN10000008",
            2527601.89,
        ),
        # after a date, or with the separators the log redaction takes (en dash, minus sign): shown
        *("2025-01-01/111-222-333", "20250101-111-222-333", "252\u2013760\u2013189", "252\u2212760\u2212189"),
    ],
)
def test_a_bsn_written_in_groups_or_against_letters_is_masked_under_a_code_key(bsn: str | float) -> None:
    """Only a number of 8 or 9 digits on its own was taken for a BSN: with letters against it or its
    digits in groups, it was shown under a code key."""
    payload = {"feitcode": bsn, "dossiernummer": bsn, "wetsartikel": bsn, "reason": bsn}
    assert _shown_values(show_payload(json.dumps(payload).encode(), unmasked=False)) == []


def test_a_date_key_shows_only_a_date_or_a_moment() -> None:
    """Under a date key any digits and separators were shown: a BSN or a phone number in groups too."""
    for odd in ("252.760.189", "06 1234 5678", "2527-60-189", "0612345678", "12:30", "2025-13-01", "1-2-3-4"):
        assert _shown_values(show_payload(json.dumps({"datum": odd}).encode(), unmasked=False)) == [], odd
    moments = {
        "datum": "2025-03-12",
        "pleegdatum": "3-2-2025",
        "verzuimVanaf": "03/02/2025",
        "tijdstip": "2025-12-28T19:05:00+01:00",
        "occurredAt": "2025-03-12T10:00:00.123456+00:00",
        "notifiedAt": "2026-12-05T23:00:00Z",
        "plannedAt": "12-03-2025 14:05",
    }
    assert show_payload(json.dumps(moments).encode(), unmasked=False) == moments


def test_a_uuid_header_is_shown_though_it_starts_with_eight_digits() -> None:
    """A random message id masked now and then: '25864531-c2c3-...' holds eight digits on their own."""
    shown = show_headers({"message-id": "25864531-c2c3-4375-8397-0152c9c6b681"}, unmasked=False)
    assert shown == {"message-id": "25864531-c2c3-4375-8397-0152c9c6b681"}
