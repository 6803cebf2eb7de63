"""The parent letter "aanmelding verwijsindex aan ouder": content, escaping, rule 11, PDF."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError
from pypdf import PdfReader

from hub.letters import (
    Afzender,
    LetterContact,
    LetterJeugdige,
    ParentLetterData,
    pdf_safe,
    render_parent_letter_html,
    render_parent_letter_pdf,
)


def letter(**over: Any) -> ParentLetterData:
    values: dict[str, Any] = {
        "kenmerk": "VI-2026-0042",
        "datum": date(2026, 1, 16),
        "adresregels": ["Laan van Meerdervoort 1", "2517 AA Den Haag"],
        "jeugdige": LetterJeugdige(
            voornamen="Zoë",
            geslachtsnaam="Visser",
            geboortedatum=date(2010, 3, 14),
            geslacht="VROUW",
            gemeente="Den Haag",
        ),
        "aangemaakt": date(2026, 1, 15),
        "einddatum": date(2027, 1, 15),
        "contactpersoon": LetterContact(naam="Els Bos", email="e.bos@halt.nl", telefoon="070 123 4567"),
        "afzender": Afzender(adresregels=["Postbus 100", "2500 AA Den Haag"], telefoon="088 0000000",
                             email="denhaag@halt.nl"),
    }  # fmt: skip
    values.update(over)
    return ParentLetterData(**values)


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_html_names_the_contact_the_end_date_and_the_rights() -> None:
    page = render_parent_letter_html(letter())
    for expected in ("Els Bos", "e.bos@halt.nl", "070 123 4567", "15 januari 2027", "Zoë Visser",
                     "Verwijsindex Haaglanden", "Inzage", "Correctie", "Bezwaar", "denhaag@halt.nl",
                     "burgerservicenummer", "VI-2026-0042"):  # fmt: skip
        assert expected in page, expected
    assert page.startswith("<!DOCTYPE html>") and '<html lang="nl">' in page


def test_html_escapes_every_input() -> None:
    evil = LetterContact(naam="<script>alert(1)</script>", email="a@b.nl", telefoon="070 123 4567")
    page = render_parent_letter_html(letter(contactpersoon=evil, kenmerk='"><img src=x>'))
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&quot;&gt;&lt;img src=x&gt;" in page


@pytest.mark.parametrize("field", ["reden", "delict", "screeningsresultaat", "bsn"])
def test_the_letter_cannot_carry_a_reason_offence_screening_or_bsn(field: str) -> None:
    with pytest.raises(ValidationError):
        letter(**{field: "DIEFSTAL"})


def test_the_letter_holds_no_reason_or_offence_words() -> None:
    text = render_parent_letter_html(letter()).lower() + pdf_text(render_parent_letter_pdf(letter())).lower()
    for word in ("diefstal", "vernieling", "agressie", "halt-straf", "signaleringsinstrument", "delict"):
        assert word not in text


def test_end_date_must_follow_the_signal_date() -> None:
    with pytest.raises(ValidationError):
        letter(einddatum=date(2026, 1, 15))


def test_pdf_renders_dutch_text_with_the_contact_and_end_date() -> None:
    data = render_parent_letter_pdf(letter())
    assert data.startswith(b"%PDF")
    text = pdf_text(data)
    for expected in ("Verwijsindex Haaglanden", "Zoë Visser", "Els Bos", "15 januari 2027", "Uw rechten"):
        assert expected in text, expected


def test_pdf_transliterates_characters_the_core_font_lacks() -> None:
    youth = LetterJeugdige(voornamen="Łucja Şule", geslachtsnaam="Nguyễn", geboortedatum=date(2011, 5, 2),
                           geslacht="VROUW", gemeente="Leiden")  # fmt: skip
    text = pdf_text(render_parent_letter_pdf(letter(jeugdige=youth)))
    assert "Lucja Sule Nguyen" in text
    assert pdf_safe("Zoë “citaat” – 😀") == "Zoë “citaat” – ?"
