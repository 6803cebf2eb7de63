"""Which youth a dead letter is about, for its audit entries; and what the timeline keeps of a search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from hub.ops.api import NOT_KEPT, _kept_id
from hub.ops.dlq import Reason
from hub.ops.dlq_records import bsn_in_key_or_payload

DATA = Path(__file__).resolve().parents[1] / "data"
YOUTH, PARENT, OTHER = "628194821", "111222333", "123456782"  # each passes the elfproef


def _json(record: object) -> bytes:
    return json.dumps(record).encode()


def test_the_youths_bsn_is_found_not_a_parents_or_guardians() -> None:
    police = json.loads((DATA / "politie/valid_winkeldiefstal.json").read_bytes())
    assert police["verdachte"]["bsn"] == YOUTH
    police["wettelijkVertegenwoordigers"][0]["bsn"] = PARENT  # listed after the youth's block
    assert bsn_in_key_or_payload(None, _json(police)) == YOUTH
    for record in (
        {"ouder": {"bsn": PARENT}, "kind": {"bsn": YOUTH}},
        {"bsnOuder": PARENT, "dossier": {"jongere": {"bsn": YOUTH}}},
        {"bsn": OTHER, "zaak": {"leerling": {"burgerservicenummer": YOUTH}}},  # the youth's, though deeper
        {"contactpersonen": [{"bsn": PARENT}], "youth": {"person": {"BSN": YOUTH}}},
        {"verzorger": {"bsn": PARENT}, "zaak": {"bsn": YOUTH}},  # no youth's block: the nearest other
        [{"voogd": {"bsn": PARENT}}, {"betrokkene": {"bsn": YOUTH}}],
    ):
        assert bsn_in_key_or_payload(None, _json(record)) == YOUTH, record
    for theirs in ({"ouder": {"bsn": PARENT}}, {"guardian": {"bsn": PARENT}}, {"parentBsn": PARENT}):
        assert bsn_in_key_or_payload(None, _json(theirs)) is None, theirs


def test_a_bsn_sent_as_a_number_is_found() -> None:
    boa = (DATA / "boa/invalid_bsn_als_getal.json").read_bytes()
    assert json.loads(boa)["betrokkene"]["bsn"] == 507529170
    assert bsn_in_key_or_payload(None, boa) == "507529170"
    assert bsn_in_key_or_payload(None, _json({"jongere": {"bsn": 10000008}})) == "010000008"  # zero lost
    for odd in (507529170.0, True, 123456789, -507529170):  # a float, a bool, no elfproef, negative
        assert bsn_in_key_or_payload(None, _json({"jongere": {"bsn": odd}})) is None, odd


def test_the_payload_is_looked_at_before_a_key_that_passes_the_elfproef() -> None:
    # a sender's reference of nine digits passes the elfproef about one time in eleven
    assert bsn_in_key_or_payload(OTHER, _json({"verdachte": {"bsn": YOUTH}})) == YOUTH
    assert bsn_in_key_or_payload(OTHER, _json({"verdachte": {"naam": "x"}})) == OTHER  # none in it
    assert bsn_in_key_or_payload(OTHER, _json({"ouder": {"bsn": PARENT}})) == OTHER
    assert bsn_in_key_or_payload(OTHER, None) == OTHER  # no payload read


@pytest.mark.parametrize(
    "name", ["valid_batch_utf8.csv", "valid_batch_utf8_bom.csv", "valid_batch_windows1252.csv"]
)
def test_a_leerplicht_csv_names_the_bsn_of_its_first_row(name: str) -> None:
    batch = (DATA / "leerplicht" / name).read_bytes()
    assert bsn_in_key_or_payload("LP-batch", batch) == "167868433"


def test_a_csv_without_a_bsn_column_or_rows_names_none() -> None:
    comma = (DATA / "leerplicht/invalid_komma_als_scheidingsteken.csv").read_bytes()
    assert bsn_in_key_or_payload(None, comma) == "167868433"
    assert bsn_in_key_or_payload(None, b"Dossiernummer;Naam ouder/verzorger\nLP-1;628194821\n") is None
    assert bsn_in_key_or_payload(None, b"Dossiernummer;BSN\n") is None  # a header, no row
    assert bsn_in_key_or_payload(None, b"Dossiernummer;BSN\nLP-1\n") is None  # a short row
    assert bsn_in_key_or_payload(None, b"BSN\n" + PARENT.encode() + b"\x00\n") is None
    assert bsn_in_key_or_payload(None, b"\xff\xfe\x00garbage") is None
    assert bsn_in_key_or_payload(None, b"12") is None and bsn_in_key_or_payload(None, b'"x"') is None


@pytest.mark.parametrize(
    "search",
    [
        "3f2b8c1e-9d4a-4e6f-8a7b-0c1d2e3f4a5b",
        "3F2B8C1E-9D4A-4E6F-8A7B-012345678901",  # a UUID, even with a run of digits
        "tketenhub.ops.in.v1.dlq:0:123456789",  # a dead letter's id: its offset may be long
        "PL1500-2026-0001",
        "LP-2025-17",
        "politie-tx-2025-17",  # a partner's transaction id, passed on as it came
        "42",
        "9e1fd6b1b1b0a2c4",  # a replay job's id
    ],
)
def test_the_timeline_keeps_an_id_the_hub_issues(search: str) -> None:
    """Kept when the search found it: as an entry's transaction id, or among its objects."""
    as_transaction = [{"transaction_id": search, "objects": {}}]
    among_objects = [{"transaction_id": "t", "objects": {"ids": [search], "n": 1}}]
    assert _kept_id(search, as_transaction) == _kept_id(search, among_objects) == search
    assert _kept_id(search, [{"transaction_id": "t", "objects": {"id": search + "0"}}]) == NOT_KEPT


@pytest.mark.parametrize(
    "search",
    [
        "111222333",  # a BSN
        "11122233",  # one of eight digits
        "bsn:111222333",
        "0612345678",  # a phone number
        "06-12345678",
        "Jan Jansen",  # a name
        "Jansen",
        "jan2@example.nl",
        "ab\tc1",
        "%%%",
        # in groups, as pasted from a ticket: the audit log (kept for years) kept them
        "252-760-189",
        "252.760.189",
        "2527.60.189",
        "BSN252-760-189",
        "06-1234-5678",
        "+31-6-1234-5678",
        "2025-01-01/111-222-333",  # after a date: its digits ran on to 17
        "252\u2013760\u2013189",  # en dashes
        # a name with a year or an age, a postcode with a house number: kept for years
        "Jansen2010",
        "sanne.jansen2010",
        "S.Jansen-14",
        "2511AB12",
    ],
)
def test_the_timeline_keeps_no_search_text_that_may_name_a_person(search: str) -> None:
    """Not kept when the search found nothing (no entry holds a name or a BSN); and one that looks
    like a BSN or a phone number is not kept even where an entry holds it."""
    assert _kept_id(search) == NOT_KEPT
    assert _kept_id(search.upper()) == NOT_KEPT  # "JANSEN2010" was kept, by the shape of a reference
    # refused by the shape of a BSN, a phone number, an address or a name with spaces, found or not
    if search not in ("Jansen", "%%%", "Jansen2010", "sanne.jansen2010", "S.Jansen-14", "2511AB12"):
        assert _kept_id(search, [{"transaction_id": search, "objects": {}}]) == NOT_KEPT


@pytest.mark.parametrize(
    "reason",
    [
        *("gebeld over 252-760-189", "zie 252.760.189", "BSN 252 760 189"),
        *("sinds 2025-01-01 111-222-333", "BSN 252\u2013760\u2013189", "BSN 252\u00a0760\u00a0189"),
    ],
)
def test_an_operators_reason_naming_a_bsn_in_groups_is_refused(reason: str) -> None:
    """A reason is kept with the dead letter's action: a BSN typed in groups passed the check."""
    with pytest.raises(ValidationError, match="looks like a BSN"):
        TypeAdapter(Reason).validate_python(reason)
    TypeAdapter(Reason).validate_python("partner heeft het bericht op 12-12-2026 hersteld")
