"""A caseworker's phone number, as the hub takes it, on its way into the Verwijsindex contract."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.verwijsindex.contract import TELEFOON, Contactpersoon
from connectors.verwijsindex.mapping import contact_van
from hub.errors import PermanentError
from hub.signals.rules import phone_problem
from schemas.caseworker import ContactDetails

HUB_PHONE = r"^[0-9 +()\-]{4,40}$"  # schemas._base.Phone: what the directory and the API take


def card(phone: str) -> ContactDetails:
    return ContactDetails(name="Ilse Bakker", organisation="Halt Den Haag", email="ilse@halt.nl", phone=phone)


@pytest.mark.parametrize(
    ("phone", "sent"),
    [
        ("070 123 4567", "070 123 4567"),  # fits: goes as it is
        ("(070) 123-4567", "(070) 123-4567"),
        ("+31 (0)6 - 12 34 56 78", "+31612345678"),  # too long as written; no trunk 0 after +31
        ("+31 (0)70 123 4567", "+31701234567"),  # fits as written, but "+31 0 70" is no number
        ("0031-70-1234567+", "0031701234567"),  # a '+' only leads
        ("06 - 12 - 34 - 56 - 78", "0612345678"),  # 22 characters: too long as written
        ("123456", "123456"),
    ],
)
def test_a_phone_the_hub_took_goes_to_the_index_in_the_contracts_form(phone: str, sent: str) -> None:
    """These made every signal and contact change of their caseworker a dead letter (ValidationError
    at delivery, the same on replay)."""
    assert contact_van(card(phone)).telefoon == sent
    assert phone_problem(phone) is None


@pytest.mark.parametrize("phone", ["4567", "12345", "+1 234", "0" * 21, "+31 (0)" + "1" * 19])
def test_a_phone_no_form_of_which_the_index_takes_is_refused_by_name_not_value(phone: str) -> None:
    problem = phone_problem(phone)
    assert problem is not None and "telefoonnummer" in problem
    with pytest.raises(PermanentError, match="phone number") as caught:
        contact_van(card(phone))
    assert phone not in str(caught.value)


@given(st.from_regex(HUB_PHONE, fullmatch=True).map(str.strip).filter(lambda p: len(p) >= 4))
def test_every_phone_the_hub_takes_is_sent_by_the_contract_or_refused_up_front(phone: str) -> None:
    if phone_problem(phone) is not None:
        with pytest.raises(PermanentError):
            contact_van(card(phone))
        return
    sent = contact_van(card(phone)).telefoon
    assert sent is not None and re.fullmatch(TELEFOON, sent)
    Contactpersoon.model_validate({"naam": "Ilse Bakker", "telefoon": sent})  # the index's own check
    # the same number: its digits, less only a trunk "(0)" after a country code
    digits, kept = re.sub(r"\D", "", phone), re.sub(r"\D", "", sent)
    if phone.startswith("+"):
        assert kept.replace("0", "") == digits.replace("0", "") and len(kept) <= len(digits)
    else:
        assert kept == digits
