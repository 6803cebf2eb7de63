"""The police's referral record (JSON, as the police systems publish it for Halt)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from schemas._base import ONE_LINE
from schemas.bsn import Bsn
from schemas.partners._common import (
    LongText,
    OptCode,
    OptEmail,
    OptPhone,
    OptText,
    PartnerAmount,
    PartnerBool,
    PartnerCount,
    PartnerDate,
    PartnerModel,
    Text,
    surname_fits,
)

Feitcode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z][0-9]{3}[A-Za-z]?$")
]
ORGANISATION_PREFIX = "Politie eenheid "
# The referrer is 'Politie eenheid <eenheid>', a name of at most 200 characters: a longer eenheid is
# refused on its own field, rather than as a misfit in translation.
Eenheid = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200 - len(ORGANISATION_PREFIX), pattern=ONE_LINE
    ),
]
PvNummer = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^PL[0-9]{4}-[0-9]{10}-[0-9]{1,3}$")
]


class Verbalisant(PartnerModel):
    """The reporting officer."""

    naam: Text
    dienstnummer: OptCode = None
    email: OptEmail = None
    telefoon: OptPhone = None


class Verdachte(PartnerModel):
    """The suspect, as registered in BVH from the BRP."""

    bsn: Bsn
    voornamen: Text
    voorvoegsel: OptText = None
    achternaam: Text
    geboortedatum: PartnerDate
    geslacht: Literal["M", "V", "O", "X"] = "O"
    gemeente: Text

    @field_validator("achternaam")
    @classmethod
    def _surname_fits(cls, achternaam: str, info: ValidationInfo) -> str:
        return surname_fits(info.data.get("voorvoegsel"), achternaam, "voorvoegsel")


class Vertegenwoordiger(PartnerModel):
    """A legal representative (parent or guardian)."""

    naam: Text
    relatie: Literal["moeder", "vader", "ouder", "voogd", "pleegouder", "anders"] = "ouder"
    gezag: PartnerBool = True
    telefoon: OptPhone = None
    email: OptEmail = None


class Schade(PartnerModel):
    """Damage: this suspect's share and the total of the case."""

    bedrag_jeugdige: PartnerAmount
    bedrag_totaal: PartnerAmount | None = None

    @model_validator(mode="after")
    def _share_within_total(self) -> Schade:
        if self.bedrag_totaal is not None and self.bedrag_jeugdige > self.bedrag_totaal:
            raise ValueError("bedragJeugdige is groter dan bedragTotaal")
        return self


class PolitieVerwijzing(PartnerModel):
    """One Halt referral from the police (proces-verbaal summary)."""

    proces_verbaal_nummer: PvNummer
    eenheid: Eenheid = "Den Haag"
    basisteam: OptText = None
    verbalisant: Verbalisant
    feitcode: Feitcode
    wetsartikel: OptCode = None
    pleegdatum: PartnerDate
    pleegplaats: OptText = None
    omschrijving: Annotated[LongText | None, Field(default=None)]
    verdachte: Verdachte
    wettelijk_vertegenwoordigers: list[Vertegenwoordiger] = Field(default_factory=list, max_length=10)
    bekennend: PartnerBool
    jeugdige_akkoord: PartnerBool
    ouders_akkoord: PartnerBool | None = None
    ouders_geinformeerd_op: PartnerDate | None = None
    schade: Schade | None = None
    eerdere_haltverwijzingen: Annotated[
        PartnerCount,
        Field(ge=0, le=100),
        WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 100}, {"type": "string"}]}),
    ] = 0
    ovj_toestemming: PartnerBool = False
    parketnummer: OptText = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> PolitieVerwijzing:
        if self.pleegdatum < self.verdachte.geboortedatum:
            raise ValueError("pleegdatum ligt voor de geboortedatum van de verdachte")
        return self
