"""The BOA handheld app's referral (JSON): ticket number, offence code, project if any."""

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

from schemas.bsn import Bsn
from schemas.partners._common import (
    Code,
    LongText,
    OptEmail,
    OptPhone,
    OptText,
    PartnerAmount,
    PartnerBool,
    PartnerDate,
    PartnerDateTime,
    PartnerFloat,
    PartnerModel,
    Text,
    dutch_day,
    surname_fits,
)

Feitcode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z][0-9]{3}[A-Za-z]?$")
]
Bonnummer = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Z]{2,4}-[0-9]{4}-[0-9]{4,8}$")
]
Projectcode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9\-]{1,29}$")
]


def _coordinate(limit: int) -> WithJsonSchema:
    number = {"type": "number", "minimum": -limit, "maximum": limit}
    return WithJsonSchema({"anyOf": [number, {"type": "string"}]})


Latitude = Annotated[PartnerFloat, Field(ge=-90, le=90), _coordinate(90)]
Longitude = Annotated[PartnerFloat, Field(ge=-180, le=180), _coordinate(180)]


class Handhaver(PartnerModel):
    """The enforcement officer who wrote the ticket."""

    naam: Text
    boa_nummer: Code
    organisatie: Text
    email: OptEmail = None
    telefoon: OptPhone = None


class Locatie(PartnerModel):
    """Where the officer was (from the app's GPS and street lookup)."""

    gemeente: Text
    straat: OptText = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class Betrokkene(PartnerModel):
    """The youth, identified on the spot (ID checked against the BRP)."""

    bsn: Bsn
    voornaam: Text
    tussenvoegsel: OptText = None
    achternaam: Text
    geboortedatum: PartnerDate
    geslacht: Literal["M", "V", "X", "O"] = "O"
    woonplaats: Text

    @field_validator("achternaam")
    @classmethod
    def _surname_fits(cls, achternaam: str, info: ValidationInfo) -> str:
        return surname_fits(info.data.get("tussenvoegsel"), achternaam, "tussenvoegsel")


class OuderContact(PartnerModel):
    """A parent the officer contacted."""

    naam: Text
    telefoon: OptPhone = None
    email: OptEmail = None
    gezag: PartnerBool = True


class BoaVerwijzing(PartnerModel):
    """One referral as the handheld app exports it."""

    bonnummer: Bonnummer
    app_versie: OptText = None
    tijdstip: PartnerDateTime
    feitcode: Feitcode
    feitomschrijving: Annotated[LongText | None, Field(default=None)]
    projectcode: Annotated[Projectcode | None, Field(default=None)]
    handhaver: Handhaver
    locatie: Locatie
    betrokkene: Betrokkene
    ouder: OuderContact | None = None
    bekend: PartnerBool
    akkoord_jeugdige: PartnerBool
    akkoord_ouders: PartnerBool | None = None
    ouders_geinformeerd_op: PartnerDate | None = None
    schadebedrag: PartnerAmount | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> BoaVerwijzing:
        # A typing error in a date is the officer's to correct: decided, the referral was refused
        # ("the youth was -2") and its bonnummer taken for good (rule 7).
        if dutch_day(self.tijdstip) < self.betrokkene.geboortedatum:
            raise ValueError("tijdstip ligt voor de geboortedatum van de betrokkene")
        return self
