"""A preventive referral (JSON) from a wijkteam, jongerenwerk, school or wijkagent."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator, model_validator

from schemas._base import ONE_LINE
from schemas.bsn import Bsn
from schemas.partners._common import (
    LongText,
    OptEmail,
    OptPhone,
    OptText,
    PartnerBool,
    PartnerDate,
    PartnerModel,
    Text,
    surname_fits,
)

Categorie = Literal[
    "overlast",
    "fysieke-agressie",
    "verbale-agressie",
    "diefstal",
    "vernieling",
    "online",
    "schoolverzuim",
    "vuurwerk",
    "middelen",
    "anders",
]
Aanmeldnummer = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=40, pattern=ONE_LINE)
]


class Verwijzer(PartnerModel):
    """The professional who refers."""

    soort: Literal["WIJKTEAM", "JONGERENWERK", "SCHOOL", "WIJKAGENT"]
    organisatie: Text
    naam: Text
    email: OptEmail = None
    telefoon: OptPhone = None


class Jongere(PartnerModel):
    """The youth."""

    bsn: Bsn
    voornamen: Text
    tussenvoegsel: OptText = None
    achternaam: Text
    geboortedatum: PartnerDate
    geslacht: Literal["man", "vrouw", "anders", "onbekend"] = "onbekend"
    gemeente: Text

    @field_validator("achternaam")
    @classmethod
    def _surname_fits(cls, achternaam: str, info: ValidationInfo) -> str:
        return surname_fits(info.data.get("tussenvoegsel"), achternaam, "tussenvoegsel")


class Ouder(PartnerModel):
    """A parent or carer."""

    naam: Text
    relatie: Literal["ouder", "voogd", "pleegouder", "anders"] = "ouder"
    gezag: PartnerBool = True
    telefoon: OptPhone = None
    email: OptEmail = None


class Aanleiding(PartnerModel):
    """What prompted the referral."""

    datum: PartnerDate
    categorie: Categorie
    omschrijving: LongText
    plaats: OptText = None


class PreventiefAanmelding(PartnerModel):
    """One preventive referral (Preventief naar Halt)."""

    aanmeldnummer: Aanmeldnummer
    verwijzer: Verwijzer
    jongere: Jongere
    ouders: list[Ouder] = Field(default_factory=list, max_length=10)
    aanleiding: Aanleiding
    jongere_akkoord: PartnerBool
    ouders_akkoord: PartnerBool | None = None
    ouders_geinformeerd_op: PartnerDate | None = None
    school: OptText = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> PreventiefAanmelding:
        if self.aanleiding.datum < self.jongere.geboortedatum:
            raise ValueError("aanleiding.datum ligt voor de geboortedatum van de jongere")
        return self
