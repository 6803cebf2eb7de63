"""The HTTP contract of the Verwijsindex Haaglanden connector: request and response models.

No public interface spec exists, so ketenhub defines this one. Field names are Dutch, like the
domain. A signal carries only the rule-11 whitelist; every model forbids extra fields, so the
index answers 422 to anything else (a reason, an offence, a screening result, a parent). The hub
reads the index's answers leniently (`ANSWER_EXTRA`): a field the index adds is ignored, not a
broken answer.
"""

from __future__ import annotations

from datetime import MAXYEAR, MINYEAR, date, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas._base import Code, Token
from schemas.bsn import Bsn
from schemas.dates import age_on, birthday

TRANSACTION_HEADER = "Fsc-Transaction-Id"
MAX_YEARS = 2  # rule 12: at most created + 2 years
MAX_AGE = 23  # rule 12: at most the 23rd birthday
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
TELEFOON = r"^\+?[0-9 ()-]{6,20}$"  # stricter than the hub's own phone numbers: see mapping.telefoon_van
# How the hub reads what the index answers (DESIGN: partner formats are parsed leniently at the
# edge): a field the contract does not know is ignored. What the hub sends stays strict.
ANSWER_EXTRA: Literal["ignore"] = "ignore"


class _Strict(BaseModel):
    # hide_input_in_errors: a validation error must not print a BSN or a name.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def add_years(day: date, years: int) -> date:
    """The same calendar day `years` later; 29 February falls back to 28 February. Past the
    calendar's range (year 1 to 9999) it is the calendar's first or last day, not an error."""
    year = day.year + years
    if not MINYEAR <= year <= MAXYEAR:
        return date.max if years > 0 else date.min
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)


def max_einddatum(aangemaakt: date, geboortedatum: date) -> date:
    """Rule 12: the latest allowed end date, created + 2 years and at most the 23rd birthday."""
    return min(add_years(aangemaakt, MAX_YEARS), birthday(geboortedatum, MAX_AGE))


def default_einddatum(aangemaakt: date, geboortedatum: date, years: int = 1) -> date:
    """Rule 12's default (created + `years`, configurable), capped by the maximum."""
    return min(add_years(aangemaakt, years), max_einddatum(aangemaakt, geboortedatum))


class Geslacht(StrEnum):
    """Gender, with the values of the canonical `schemas.referral.Gender`."""

    MAN = "MAN"
    VROUW = "VROUW"
    ONBEKEND = "ONBEKEND"


class SignaalStatus(StrEnum):
    """Lifecycle of a signal in the index."""

    ACTIEF = "ACTIEF"
    INGETROKKEN_ONTERECHT = "INGETROKKEN_ONTERECHT"
    BEEINDIGD_RISICO_WEG = "BEEINDIGD_RISICO_WEG"
    VERLOPEN = "VERLOPEN"


class IntrekkingsReden(StrEnum):
    """Rule 15: why a signal is withdrawn."""

    ONTERECHT = "ONTERECHT"
    RISICO_WEG = "RISICO_WEG"


STATUS_BIJ_REDEN = {
    IntrekkingsReden.ONTERECHT: SignaalStatus.INGETROKKEN_ONTERECHT,
    IntrekkingsReden.RISICO_WEG: SignaalStatus.BEEINDIGD_RISICO_WEG,
}


class MatchType(StrEnum):
    """Same youth (client match) or youths who share a parent (family match)."""

    CLIENTMATCH = "CLIENTMATCH"
    GEZINSMATCH = "GEZINSMATCH"


class Jeugdige(_Strict):
    """The youth's identifiers, and nothing more (rule 11)."""

    bsn: Bsn = Field(description="Burgerservicenummer: 9 digits (8 are left-padded), elfproef.")
    voornamen: str = Field(min_length=1, max_length=200)
    voorvoegsel: str | None = Field(default=None, max_length=20, description="e.g. 'de', 'van der'")
    geslachtsnaam: str = Field(min_length=1, max_length=200)
    geboortedatum: date
    geslacht: Geslacht
    gemeente: str = Field(min_length=1, max_length=100, description="Municipality of residence.")


class Organisatie(_Strict):
    """The organisation that registers the signal; `code` identifies it for matching."""

    code: str = Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9-]*$")
    naam: str = Field(min_length=1, max_length=200)


class Contactpersoon(_Strict):
    """The professional other professionals contact after a match."""

    naam: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254, pattern=_EMAIL)
    telefoon: str | None = Field(default=None, pattern=TELEFOON)

    @model_validator(mode="after")
    def _reachable(self) -> Contactpersoon:
        if not (self.email or self.telefoon):
            raise ValueError("a contact person needs an e-mail address or a phone number")
        return self


class SignaalRegistratie(_Strict):
    """Body of `PUT /api/v1/signalen/{signaalId}`: the rule-11 whitelist, checked for rule 12."""

    jeugdige: Jeugdige
    organisatie: Organisatie
    contactpersoon: Contactpersoon
    aangemaakt: date = Field(description="The day the professional created the signal.")
    einddatum: date = Field(description="Last day the signal is active; rule 12 bounds it.")

    @model_validator(mode="after")
    def _check_dates(self) -> SignaalRegistratie:
        geboren = self.jeugdige.geboortedatum
        if geboren > self.aangemaakt:
            raise ValueError("geboortedatum lies after aangemaakt")
        if age_on(geboren, self.aangemaakt) >= MAX_AGE:
            raise ValueError("the youth was 23 or older on aangemaakt")
        if self.einddatum <= self.aangemaakt:
            raise ValueError("einddatum must lie after aangemaakt")
        if self.einddatum > max_einddatum(self.aangemaakt, geboren):
            raise ValueError("einddatum lies beyond aangemaakt + 2 years or the 23rd birthday (rule 12)")
        return self


class ContactWijziging(_Strict):
    """Body of `PATCH /api/v1/signalen/{signaalId}`: the new contact person (borging, rule 17)."""

    contactpersoon: Contactpersoon


class Signaal(_Strict):
    """A signal as the index reports it back; the youth's identifiers are not echoed."""

    signaal_id: str
    status: SignaalStatus
    organisatie: Organisatie
    contactpersoon: Contactpersoon
    aangemaakt: date
    einddatum: date
    beeindigd_op: datetime | None = Field(default=None, description="When it stopped being active.")
    intrekkingsreden: IntrekkingsReden | None = None


class Tegenpartij(_Strict):
    """The other professional in a match: contact details only (rule 16)."""

    organisatie: Organisatie
    contactpersoon: Contactpersoon


class Match(_Strict):
    """One match notification for one signal's professional; `match_id` is the dedup key."""

    match_id: Code = Field(description="Unique and stable; a consumer processes each id once.")
    cursor: str = Field(description="Feed position of this match; pass it as `vanaf` to resume after it.")
    type: MatchType
    signaal_id: Code = Field(description="The recipient's own signal that matched.")
    organisatie_code: str = Field(description="The recipient organisation.")
    tegenpartij: Tegenpartij
    ontstaan_op: datetime


class MatchPagina(_Strict):
    """A page of the match feed and the cursor to ask for the next one."""

    matches: list[Match]
    volgende: Token = Field(description="Opaque, monotonic cursor: the `vanaf` of the next request.")


class RuweMatchPagina(_Strict):
    """A feed page as the hub reads it: the cursor checked, each match left to be checked alone.

    A broken match is skipped rather than refusing the page, which would block every later match
    on every poll. A broken cursor does refuse the page: the hub stores it and sends it back.
    """

    matches: list[Any]
    volgende: Token


class VeldFout(_Strict):
    """One field that failed validation; the submitted value is never echoed."""

    veld: str
    melding: str


# The title of the index's 404 about a signal it does not hold; a 404 for a path the index does not
# serve has another (or is no `Fout` at all, from a proxy), and says nothing about any signal.
NOT_FOUND = "Not Found"


class Fout(_Strict):
    """Every error response: a short title, an actionable detail, field errors on 422."""

    titel: str
    detail: str
    fouten: list[VeldFout] = Field(default_factory=list)


class Status(_Strict):
    """Answer of the health endpoint."""

    status: str = "ok"
