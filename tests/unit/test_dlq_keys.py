"""No BSN in a key the hub writes to Kafka: a dead letter's key, and a replayed copy's, go as the
pseudonym of a sender's key that holds one; the subject-access export weighs such a key as the
sender's key was weighed before it was replaced."""

from __future__ import annotations

import pytest

from hub.ops.dlq_records import DeadLetter, Filter
from hub.ops.inzage_search import _sender_key, _whose
from hub.spine.dlq import KEY_PSEUDONYM, key_without_bsn
from schemas.bsn import is_valid_bsn
from schemas.pseudonym import youth_key

SECRET = "s" * 40
YOUTH, PARENT = "111222333", "123456782"


@pytest.mark.parametrize(
    ("key", "mark"),
    [
        (YOUTH, "bsn"),  # the BSN itself
        ("10000008", "bsn"),  # eight digits: a BSN that lost its leading zero
        ("bsn111222333", "text"),  # nine digits touching letters
        ("111222333x", "text"),
        ("pv-111222333-2", "text"),
        ("bsn 1112 22 333", "text"),  # in groups, as people write it: it went to Kafka as it was
        ("bsn:1112.22.333", "text"),
        ("1112-22-333", "text"),
        ("bsn 111 - 222 - 333", "text"),
        ("2025-01-01 111-222-333", "text"),  # after a date: one run, the BSN's nine digits in it
        ("bsn 1112 22 333 2", "text"),
        ("PV 2025 1112 22 333", "text"),
    ],
)
def test_a_key_with_a_bsn_in_it_goes_as_its_pseudonym(key: str, mark: str) -> None:
    assert is_valid_bsn("10000008")
    assert key_without_bsn(key, SECRET) == (youth_key(SECRET, key), mark)
    assert key_without_bsn(key, None) == (None, None)  # without the secret: no key at all
    if mark == "bsn":
        assert youth_key(SECRET, key) == youth_key(SECRET, key.zfill(9))  # the youth's own key


@pytest.mark.parametrize(
    "key",
    [
        None,
        "PL1500-20250312-01",  # a reference: no nine digits passing the elfproef
        "order-123456789",  # nine digits failing it
        "poison-3-12345678",
        "2025-01-01",  # a date: eight digits in groups, which pass the elfproef one time in eleven
        "PV-2025-01-01",
        "order 20250101",
        "PL1500-2025031201-1",
        "b3f1c0de-1234-4567-8910-123456789012",  # a UUID's digits are an id's
        youth_key(SECRET, YOUTH),  # a youth key already, whatever digits are in it
    ],
)
def test_a_key_without_a_bsn_is_kept_as_sent(key: str | None) -> None:
    assert key_without_bsn(key, SECRET) == (key, None)


def _letter(key: str | None, payload: bytes, mark: str | None) -> DeadLetter:
    headers = {KEY_PSEUDONYM: mark} if mark else {}
    return DeadLetter("t.dlq.v1", 0, 1, 0, key, headers, payload=payload)


def test_the_export_weighs_a_pseudonymised_key_as_the_key_it_replaced() -> None:
    """Keyed by a parent's BSN, about the youth: the youth's letter, not the parent's (the payload
    wins over a key that was a BSN). Keyed by the youth's BSN, naming no BSN: the youth's. A key that
    only held a BSN names nobody."""
    about_youth = b'{"verdachte": {"bsn": "%s"}}' % YOUTH.encode()
    keyed_by_parent = _letter(youth_key(SECRET, PARENT), about_youth, "bsn")
    for bsn, expected in ((PARENT, False), (YOUTH, True)):
        whose = _whose(_sender_key(keyed_by_parent), about_youth, bsn=bsn, key=youth_key(SECRET, bsn))
        assert whose is expected, bsn
    no_bsn = b'{"fout": "onleesbaar"}'
    keyed_by_youth = _letter(youth_key(SECRET, YOUTH), no_bsn, "bsn")
    assert _whose(_sender_key(keyed_by_youth), no_bsn, bsn=YOUTH, key=youth_key(SECRET, YOUTH)) is True
    held_one = _letter(youth_key(SECRET, f"pv{YOUTH}"), no_bsn, "text")
    assert _sender_key(held_one) is None
    # the hub's own youth key, unmarked, is the youth's as before
    own = _letter(youth_key(SECRET, YOUTH), no_bsn, None)
    assert _sender_key(own) == youth_key(SECRET, YOUTH)


def test_a_filter_by_a_key_with_a_bsn_in_it_matches_the_letters_filed_under_its_pseudonym() -> None:
    """The spine files a letter of a record keyed by a BSN under the BSN's pseudonym: a filter by the
    key as sent matches that one, and still one written before, under the BSN itself."""
    filed, kept = _letter(youth_key(SECRET, YOUTH), b"", "bsn"), _letter(YOUTH, b"", None)
    others = [_letter(youth_key(SECRET, PARENT), b"", "bsn"), _letter(None, b"", None)]
    by_bsn = Filter(key=YOUTH, raw_keys=True)
    assert [by_bsn.matches(d) for d in (filed, kept, *others)] == [False, True, False, False]
    widened = by_bsn.with_pseudonym(SECRET)
    assert [widened.matches(d) for d in (filed, kept, *others)] == [True, True, False, False]
    assert by_bsn.with_pseudonym(None) == by_bsn  # without the secret, the pseudonym is unknown
    by_youth_key = Filter(key=youth_key(SECRET, YOUTH))
    assert by_youth_key.with_pseudonym(SECRET) == by_youth_key
    assert Filter(key="PL1500-20250312-01", raw_keys=True).with_pseudonym(SECRET).key_pseudonym is None
