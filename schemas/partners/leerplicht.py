"""One row of a leerplicht CSV export (semicolon-separated, Dutch headers) and its parse result."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas._base import ONE_LINE
from schemas.bsn import Bsn
from schemas.partners._common import (
    SURNAME_MAX,
    Code,
    OptEmail,
    OptFoldedText,
    OptPhone,
    OptText,
    PartnerBool,
    PartnerCount,
    PartnerDate,
    Text,
)
from schemas.problems import FieldProblem
from schemas.referral import Referral

# [0-9], not \d: the pattern's \d takes digits of any script, which the canonical BRIN does not.
Brin = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[0-9]{2}[A-Za-z]{2}([0-9]{2})?$")
]
ORGANISATION_PREFIX = "Leerplicht "
# The referrer is 'Leerplicht <gemeente>', a name of at most 200 characters: a longer Gemeente is
# refused on its own column, rather than as a misfit in translation.
Gemeente = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200 - len(ORGANISATION_PREFIX), pattern=ONE_LINE
    ),
]


class LeerplichtRij(BaseModel):
    """A data row; field aliases are the export's column headers."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, str_strip_whitespace=True)

    dossiernummer: Code = Field(alias="Dossiernummer")
    bsn: Bsn = Field(alias="BSN")
    voornamen: Text = Field(alias="Voornamen")
    tussenvoegsel: OptText = Field(default=None, alias="Tussenvoegsel")
    achternaam: Text = Field(alias="Achternaam")
    geboortedatum: PartnerDate = Field(alias="Geboortedatum")
    geslacht: OptText = Field(default=None, alias="Geslacht")
    woonplaats: Text = Field(alias="Woonplaats")
    school: OptFoldedText = Field(default=None, alias="School")
    brin: Brin | None = Field(default=None, alias="BRIN")
    verzuim_vanaf: PartnerDate = Field(alias="Verzuim vanaf")
    verzuim_tot_en_met: PartnerDate = Field(alias="Verzuim tot en met")
    uren_verzuim: PartnerCount = Field(alias="Uren verzuim", ge=0, le=10_000)
    keer_te_laat: PartnerCount = Field(default=0, alias="Aantal keer te laat", ge=0, le=10_000)
    naam_ouder: OptText = Field(default=None, alias="Naam ouder/verzorger")
    telefoon_ouder: OptPhone = Field(default=None, alias="Telefoon ouder/verzorger")
    email_ouder: OptEmail = Field(default=None, alias="E-mail ouder/verzorger")
    jeugdige_akkoord: PartnerBool | None = Field(default=None, alias="Jeugdige akkoord")
    ouders_akkoord: PartnerBool | None = Field(default=None, alias="Ouders akkoord")
    ouders_geinformeerd_op: PartnerDate | None = Field(default=None, alias="Ouders geinformeerd op")
    eerdere_halt: PartnerCount = Field(default=0, alias="Eerdere Halt-verwijzingen", ge=0, le=100)
    ovj_toestemming: PartnerBool = Field(default=False, alias="OvJ-toestemming")
    leerplichtambtenaar: Text = Field(alias="Leerplichtambtenaar")
    email_lpa: OptEmail = Field(default=None, alias="E-mail leerplichtambtenaar")
    telefoon_lpa: OptPhone = Field(default=None, alias="Telefoon leerplichtambtenaar")
    gemeente: Gemeente = Field(alias="Gemeente")

    @model_validator(mode="after")
    def _period_in_order(self) -> LeerplichtRij:
        if self.verzuim_tot_en_met < self.verzuim_vanaf:
            raise ValueError("'Verzuim tot en met' ligt voor 'Verzuim vanaf'")
        if self.verzuim_vanaf < self.geboortedatum:
            raise ValueError("'Verzuim vanaf' ligt voor de geboortedatum")
        return self

    @model_validator(mode="after")
    def _surname_fits(self) -> LeerplichtRij:
        # each column may hold 200 characters; the canonical surname joins them with a space
        if len(self.achternaam) + (len(self.tussenvoegsel) + 1 if self.tussenvoegsel else 0) > SURNAME_MAX:
            raise ValueError(f"'Tussenvoegsel' en 'Achternaam' samen zijn langer dan {SURNAME_MAX} tekens")
        return self


HEADERS: tuple[str, ...] = tuple(f.alias or n for n, f in LeerplichtRij.model_fields.items())
REQUIRED_HEADERS: frozenset[str] = frozenset(
    f.alias or n for n, f in LeerplichtRij.model_fields.items() if f.is_required()
)


class RowResult(BaseModel):
    """The outcome of one data row: a Referral, or the problems that kept it from being one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    row: int = Field(ge=1, description="1-based data row (the header is row 0)")
    case_reference: str | None = None
    referral: Referral | None = None
    problems: list[FieldProblem] = Field(default_factory=list)
    # An unreadable row's BSN, when that cell is one (elfproef): rule 7 answers a row whose case
    # reference was taken in before with the first outcome, unless it names another youth. Never
    # shown, dumped or answered.
    bsn: str | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="after")
    def _either_or(self) -> RowResult:
        if (self.referral is None) == (not self.problems):
            raise ValueError("a row result has either a referral or problems")
        return self

    @property
    def ok(self) -> bool:
        """True when the row became a Referral."""
        return self.referral is not None
