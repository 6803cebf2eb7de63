"""The letter "aanmelding verwijsindex aan ouder" (rule 14), as escaped HTML and as PDF."""

from __future__ import annotations

import html
import unicodedata
from datetime import date
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

_MONTHS = ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september",
           "oktober", "november", "december")  # fmt: skip
_GESLACHT = {"MAN": "man", "VROUW": "vrouw", "ONBEKEND": "onbekend"}
_NOT_DECOMPOSABLE = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "ı": "i", "Ħ": "H", "ħ": "h"})
_PDF_ENCODING = "windows-1252"  # the core fonts' encoding: covers ë, é, ï, ‘’, “”, –, €


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LetterJeugdige(_Strict):
    """The youth as the letter names them; no BSN is printed, only mentioned as registered."""

    voornamen: str = Field(min_length=1, max_length=200)
    voorvoegsel: str | None = Field(default=None, max_length=20)
    geslachtsnaam: str = Field(min_length=1, max_length=200)
    geboortedatum: date
    geslacht: Literal["MAN", "VROUW", "ONBEKEND"]
    gemeente: str = Field(min_length=1, max_length=100)

    @property
    def naam(self) -> str:
        """Full name as written in a letter."""
        return " ".join(p for p in (self.voornamen, self.voorvoegsel, self.geslachtsnaam) if p)


class LetterContact(_Strict):
    """The Halt caseworker registered as the signal's contact person."""

    naam: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254)
    telefoon: str = Field(min_length=6, max_length=30)


class Afzender(_Strict):
    """How parents reach Halt; comes from configuration, not from code."""

    naam: str = "Halt Den Haag"
    adresregels: list[str] = Field(max_length=4)
    telefoon: str = Field(min_length=6, max_length=30)
    email: str = Field(min_length=3, max_length=254)
    website: str = "www.halt.nl"


# Placeholders until Halt configures KETENHUB_VERWIJSINDEX__LETTER_SENDER.
SENDER_DEFAULTS: dict[str, str | list[str]] = {
    "naam": "Halt Den Haag",
    "adresregels": ["Halt Den Haag", "Den Haag"],
    "telefoon": "088 000 0000",
    "email": "denhaag@halt.example",
}


class ParentLetterData(_Strict):
    """Everything the parent letter shows; by construction no reason, offence or screening result."""

    kenmerk: str = Field(min_length=1, max_length=100, description="Our reference, e.g. the signal id.")
    datum: date
    ontvanger: str | None = Field(default=None, max_length=200, description="Parent(s) as addressed.")
    adresregels: list[str] = Field(default_factory=list, max_length=4)
    jeugdige: LetterJeugdige
    aangemaakt: date
    einddatum: date
    contactpersoon: LetterContact
    afzender: Afzender
    verwijsindex: str = "Verwijsindex Haaglanden"

    @model_validator(mode="after")
    def _check_dates(self) -> ParentLetterData:
        if self.einddatum <= self.aangemaakt:
            raise ValueError("einddatum must lie after aangemaakt")
        return self


def dutch_date(day: date) -> str:
    """'14 maart 2010'."""
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


class Block(NamedTuple):
    """One piece of the letter, written once and rendered both as HTML and as PDF."""

    kind: Literal["h", "p", "ul", "kv"]
    text: str = ""
    items: tuple[str, ...] = ()
    rows: tuple[tuple[str, str], ...] = ()


def _blocks(d: ParentLetterData) -> list[Block]:
    kind, halt, vi = d.jeugdige, d.afzender.naam, d.verwijsindex
    c = d.contactpersoon
    einde = dutch_date(d.einddatum)
    return [
        Block("p", f"Geachte {d.ontvanger or 'ouder(s)/verzorger(s)'},"),
        Block("p", f"Onlangs hebben wij met u en uw kind gesproken over de Verwijsindex. Met deze brief "
                   f"bevestigen wij dat {halt} op {dutch_date(d.aangemaakt)} een signaal over uw kind "
                   f"{kind.naam} heeft afgegeven in de {vi}. Dat doen wij omdat wij denken dat "
                   "samenwerking met andere organisaties in het belang is van uw kind of uw gezin."),
        Block("h", "Wat is de Verwijsindex?"),
        Block("p", "De Verwijsindex risicojongeren is geregeld in de Jeugdwet (paragraaf 7.1). Professionals "
                   "die met kinderen en jongeren tot 23 jaar werken, zoals hulpverleners, jeugdzorg, "
                   "jongerenwerk, scholen en Halt, laten daarin zien dat zij bij een jongere betrokken zijn. "
                   f"In onze regio heet dit systeem de {vi}."),
        Block("p", "Geeft een andere organisatie ook een signaal af over uw kind, of over een kind uit uw "
                   "gezin, dan ontstaat er een ‘match’. De betrokken professionals krijgen dan alleen "
                   "elkaars naam en contactgegevens, zodat zij met elkaar kunnen overleggen en hun hulp "
                   "op elkaar kunnen afstemmen. Wat er is gebeurd en wat er in gesprekken is besproken, "
                   "staat niet in de Verwijsindex."),
        Block("h", "Welke gegevens staan in de Verwijsindex?"),
        Block("ul", items=(
            "het burgerservicenummer (BSN) van uw kind",
            f"naam: {kind.naam}",
            f"geboortedatum: {dutch_date(kind.geboortedatum)}",
            f"geslacht: {_GESLACHT[kind.geslacht]}",
            f"woongemeente: {kind.gemeente}",
            f"de organisatie die het signaal afgaf: {halt}",
            "naam, e-mailadres en telefoonnummer van de contactpersoon bij Halt",
            f"de datum van het signaal en de einddatum ({einde})",
        )),
        Block("p", "Meer gegevens worden niet vastgelegd. Ook uw eigen gegevens als ouder staan er niet in."),
        Block("h", "Hoe lang blijft het signaal staan?"),
        Block("p", f"Het signaal blijft staan tot en met {einde}. Daarna vervalt het vanzelf. Halt trekt het "
                   "signaal eerder in als de zorgen voorbij zijn, of als blijkt dat het ten onrechte is "
                   "afgegeven."),
        Block("h", "Uw contactpersoon bij Halt"),
        Block("kv", rows=(("Naam", c.naam), ("Telefoon", c.telefoon), ("E-mail", c.email))),
        Block("h", "Uw rechten"),
        Block("ul", items=(
            "Inzage: u kunt opvragen welke gegevens over uw kind in de Verwijsindex staan.",
            "Correctie: kloppen de gegevens niet, dan kunt u vragen ze te verbeteren of aan te vullen.",
            "Bezwaar: bent u het niet eens met het signaal, dan kunt u bezwaar maken. Halt weegt dan "
            "opnieuw af en trekt het signaal in als uw bezwaar gegrond is.",
        )),
        Block("p", "Is uw kind 16 jaar of ouder, dan kan het deze rechten ook zelf uitoefenen. Bent u niet "
                   "tevreden over hoe wij met uw verzoek omgaan, dan kunt u een klacht indienen bij de "
                   "Autoriteit Persoonsgegevens."),
        Block("h", "Contact met Halt"),
        Block("p", "Heeft u vragen over deze brief of over de Verwijsindex, of wilt u een van uw rechten "
                   f"gebruiken? Neem dan contact op met uw contactpersoon, of met {halt}: telefoon "
                   f"{d.afzender.telefoon}, e-mail {d.afzender.email}, {d.afzender.website}."),
        Block("p", "Met vriendelijke groet,"),
        Block("p", f"{c.naam}\nHalt-medewerker, {halt}"),
    ]  # fmt: skip


def _heading(d: ParentLetterData) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    sender = [d.afzender.naam, *d.afzender.adresregels, d.afzender.telefoon, d.afzender.email]
    recipient = [d.ontvanger or f"Aan de ouder(s)/verzorger(s) van {d.jeugdige.naam}", *d.adresregels]
    meta = [
        ("Datum", dutch_date(d.datum)),
        ("Ons kenmerk", d.kenmerk),
        ("Onderwerp", f"Aanmelding van uw kind in de {d.verwijsindex}"),
    ]
    return sender, recipient, meta


def _rows_html(rows: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    e = html.escape
    return "".join(f"<tr><th>{e(key)}</th><td>{e(value)}</td></tr>" for key, value in rows)


def render_parent_letter_html(letter: ParentLetterData) -> str:
    """A printable HTML page; every value from the input is escaped."""
    e = html.escape
    sender, recipient, meta = _heading(letter)
    out = [
        '<!DOCTYPE html>\n<html lang="nl">\n<head>\n<meta charset="utf-8">',
        f"<title>Aanmelding {e(letter.verwijsindex)}</title>",
        "<style>body{font-family:Helvetica,Arial,sans-serif;max-width:42em;margin:2em auto;line-height:1.4}"
        ".afzender{text-align:right}h2{font-size:1.05em;margin-top:1.4em}th{text-align:left;padding-right:1em}"
        "@media print{body{margin:0}}</style>\n</head>\n<body>",
        '<address class="afzender">' + "<br>".join(e(x) for x in sender) + "</address>",
        '<address class="ontvanger">' + "<br>".join(e(x) for x in recipient) + "</address>",
        '<table class="kenmerk">' + _rows_html(meta) + "</table>",
    ]  # fmt: skip
    for block in _blocks(letter):
        if block.kind == "h":
            out.append(f"<h2>{e(block.text)}</h2>")
        elif block.kind == "p":
            out.append("<p>" + e(block.text).replace("\n", "<br>") + "</p>")
        elif block.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>")
        else:
            out.append(f'<table class="contact">{_rows_html(block.rows)}</table>')
    out.append("</body>\n</html>\n")
    return "\n".join(out)


def pdf_safe(text: str) -> str:
    """Text the PDF core fonts can show: keep what windows-1252 has, strip accents from the rest."""
    out = []
    for char in text.translate(_NOT_DECOMPOSABLE):
        try:
            char.encode(_PDF_ENCODING)
            out.append(char)
        except UnicodeEncodeError:
            base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            out.append(base if base.isascii() and base else "?")
    return "".join(out)


def render_parent_letter_pdf(letter: ParentLetterData) -> bytes:
    """An A4 PDF in a core font (Helvetica); characters outside its encoding are transliterated."""
    from fpdf import FPDF  # imported when a letter is made: it costs a third of a second at start-up

    pdf = FPDF(format="A4")
    pdf.core_fonts_encoding = _PDF_ENCODING
    pdf.set_title("Aanmelding Verwijsindex")  # metadata carries no name of the youth
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    sender, recipient, meta = _heading(letter)

    def line(
        text: str, size: float = 10, style: Literal["", "B"] = "", align: Literal["L", "R"] = "L"
    ) -> None:
        pdf.set_font("helvetica", style, size)
        pdf.multi_cell(0, size * 0.5, pdf_safe(text), align=align, new_x="LMARGIN", new_y="NEXT")

    for text in sender:
        line(text, 9, align="R")
    pdf.ln(6)
    for text in recipient:
        line(text)
    pdf.ln(6)
    for key, value in meta:
        line(f"{key}: {value}")
    pdf.ln(4)
    for block in _blocks(letter):
        if block.kind == "h":
            pdf.ln(2)
            line(block.text, 11, "B")
            continue
        if block.kind == "p":
            line(block.text)
        for item in block.items:
            line(f"•  {item}")
        for key, value in block.rows:
            line(f"{key}: {value}")
        pdf.ln(2)
    return bytes(pdf.output())
