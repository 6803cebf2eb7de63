"""Rule 1: the BSN type and is_valid_bsn."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.bsn import Bsn, contains_bsn, is_valid_bsn, normalise_bsn
from schemas.referral import Youth

WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


class Holder(BaseModel):
    model_config = ConfigDict(hide_input_in_errors=True)
    bsn: Bsn


def elfproef(digits: str) -> bool:
    return sum(w * int(d) for w, d in zip(WEIGHTS, digits, strict=True)) % 11 == 0


@pytest.mark.parametrize("bsn", ["111222333", "123456782", "628194821", "010000008"])
def test_valid_bsns_pass(bsn: str) -> None:
    assert is_valid_bsn(bsn)
    assert Holder(bsn=bsn).bsn == bsn


def test_eight_digits_are_left_padded_with_a_zero() -> None:
    assert is_valid_bsn("10000008")
    assert Holder(bsn="10000008").bsn == "010000008"
    assert normalise_bsn(" 10000008 ") == "010000008"


@pytest.mark.parametrize(
    "bsn",
    ["000000000", "123456789", "111222334", "1234567", "1234567890", "12345678a", "", "１１１２２２３３３"],
)
def test_invalid_bsns_fail(bsn: str) -> None:
    assert not is_valid_bsn(bsn)
    with pytest.raises(ValidationError):
        Holder(bsn=bsn)


def test_a_number_instead_of_text_is_refused() -> None:
    assert not is_valid_bsn(111222333)
    with pytest.raises(ValidationError, match="als tekst"):
        Holder(bsn=111222333)  # type: ignore[arg-type]


def test_error_message_never_echoes_the_value() -> None:
    with pytest.raises(ValidationError) as info:
        Youth(bsn="123456789", given_names="A", surname="B", birth_date="2010-01-01", municipality="X")
    text = str(info.value) + repr(info.value.errors(include_input=False))
    assert "123456789" not in text
    assert "geen geldig BSN" in text


def test_contains_bsn_finds_a_valid_bsn_in_text_only() -> None:
    assert contains_bsn("zaak van 111222333 loopt")
    assert not contains_bsn("referentie 123456789 en 1112223330")


@settings(max_examples=200)
@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_nine_digits_valid_exactly_when_elfproef_holds(digits: str) -> None:
    assert is_valid_bsn(digits) == (digits != "000000000" and elfproef(digits))


@settings(max_examples=200)
@given(st.text(max_size=12))
def test_any_text_is_judged_without_crashing(text: str) -> None:
    try:
        assert Holder(bsn=text).bsn == normalise_bsn(text)
        assert is_valid_bsn(text)
    except ValidationError:
        assert not is_valid_bsn(text)


@settings(max_examples=200)
@given(st.text(alphabet="0123456789", min_size=8, max_size=10))
def test_a_refused_number_is_never_in_the_error(digits: str) -> None:
    if is_valid_bsn(digits):
        return
    with pytest.raises(ValidationError) as info:
        Holder(bsn=digits)
    assert digits not in str(info.value)
    assert digits not in repr(info.value.errors(include_input=False))


@settings(max_examples=200)
@given(st.integers(min_value=10_000_000, max_value=999_999_999), st.integers(min_value=0, max_value=8))
def test_changing_one_digit_of_a_valid_bsn_breaks_it(seed: int, position: int) -> None:
    digits = str(seed).zfill(9)
    if not is_valid_bsn(digits):
        return
    changed = digits[:position] + str((int(digits[position]) + 1) % 10) + digits[position + 1 :]
    assert not is_valid_bsn(changed)


def test_nine_digits_inside_an_id_are_not_a_bsn_but_beside_it_they_are() -> None:
    handover = "0f0e0d0c-1111-4222-8333-a111222333bc"  # its last group holds 111222333, a valid BSN
    assert is_valid_bsn("111222333")
    assert not contains_bsn(f"Overdracht {handover} (verwijzing {handover}): wacht op toestemming")
    assert contains_bsn(f"Overdracht {handover} van 111222333")


def test_nine_digits_after_a_country_code_are_a_phone_number_not_a_bsn() -> None:
    assert is_valid_bsn("600000011")  # a mobile number's nine digits that pass the elfproef
    for phone in ("+31 600000011", "+31600000011", "+31-600000011", "0031 600000011", "+32.600000011"):
        assert not contains_bsn(f"Bel Kees de Vries op {phone} of mail kees@wijkteam.nl"), phone
    from schemas.notification import MailNotification

    mail = MailNotification(
        recipient_caseworker_id="cw-ilse",
        template="match",
        subject="Match in de Verwijsindex",
        body_text="Kees de Vries (wijkteam) is ook betrokken: +31 600000011.",
        case_reference="m-1",
    )
    assert "+31 600000011" in mail.body_text
    for text in ("BSN 600000011", "tel. 600000011", "+31 6 en 600000011", "100031 600000011", "+ 600000011"):
        assert contains_bsn(text), text


@settings(max_examples=500)
@given(st.uuids(version=4))
def test_no_uuid_looks_like_a_bsn(value: uuid.UUID) -> None:
    assert not contains_bsn(f"Overdracht {value} (verwijzing {value}) naar jongerenwerk-west")
