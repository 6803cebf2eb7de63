"""Consent to share a youth's data, shaped after the HL7 FHIR R4 Consent resource."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from schemas._base import CanonicalModel, Code, Moment, Name
from schemas.bsn import Bsn


class ConsentPurpose(StrEnum):
    """What the data may be shared for (FHIR provision.purpose)."""

    WARME_OVERDRACHT = "WARME_OVERDRACHT"
    DELEN_NA_MATCH = "DELEN_NA_MATCH"


class DataCategory(StrEnum):
    """Kinds of data a consent covers (FHIR provision.class)."""

    PERSONALIA = "PERSONALIA"
    CONTACTGEGEVENS = "CONTACTGEGEVENS"
    VERWIJZING = "VERWIJZING"
    DELICT = "DELICT"
    SCHOOL = "SCHOOL"
    GEZIN = "GEZIN"
    HULPVRAAG = "HULPVRAAG"
    SIGNALERINGSINSTRUMENT = "SIGNALERINGSINSTRUMENT"


class GrantorRole(StrEnum):
    """Whose say it is (rule 8)."""

    JEUGDIGE = "JEUGDIGE"
    OUDER_MET_GEZAG = "OUDER_MET_GEZAG"
    VOOGD = "VOOGD"


class Permission(StrEnum):
    """A grantor permits or denies (FHIR provision.type)."""

    PERMIT = "PERMIT"
    DENY = "DENY"


class ConsentMethod(StrEnum):
    """How the answer was given."""

    SCHRIFTELIJK = "SCHRIFTELIJK"
    MONDELING = "MONDELING"
    DIGITAAL = "DIGITAAL"


class ConsentStatus(StrEnum):
    """Lifecycle of a consent."""

    ACTIEF = "ACTIEF"
    INGETROKKEN = "INGETROKKEN"
    VERLOPEN = "VERLOPEN"


DUTCH_TIME = ZoneInfo("Europe/Amsterdam")  # hub.clock.LOCAL; schemas import nothing of the hub
# A consent is given by someone alive now to a hub of the 2020s: a time outside `Moment`'s bounds
# is a typing error, and one near either end of the calendar cannot even be turned into a Dutch day.
GivenAt = Annotated[
    Moment,
    Field(
        description="When the grantor answered: a date and time with its UTC offset, from "
        "2000-01-01T00:00:00Z up to (not including) 2100-01-01T00:00:00Z."
    ),
]


class Grantor(CanonicalModel):
    """One person's answer (FHIR provision.actor)."""

    role: GrantorRole
    name: Name
    permission: Permission
    given_at: datetime
    method: ConsentMethod

    @field_validator("given_at")
    @classmethod
    def _with_offset(cls, value: datetime) -> datetime:
        # Input is refused without an offset (GrantorIn), but earlier releases stored such times.
        # They are the Dutch time they were entered in, as the rules always read them.
        return value if value.tzinfo else value.replace(tzinfo=DUTCH_TIME)


class GrantorIn(Grantor):
    """A grantor's answer as a caseworker or partner sends it: the time with its offset, bounded."""

    given_at: GivenAt


# Rule 8 asks for the permit of every holder of custody. A referral names them only as far as the
# referrer knows them (the BOA and leerplicht formats carry one parent at most), so the caseworker
# states the number. Dutch law gives custody (gezag) to one person or two: one parent or both, a
# parent and their partner, one guardian or two (Burgerlijk Wetboek book 1, titles 14 and 15).
MAX_CUSTODIANS = 2
Custodians = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_CUSTODIANS,
        strict=True,
        description="How many people hold custody of the youth (gezaghebbers: parents with custody, "
        f"guardians), 1-{MAX_CUSTODIANS}, as the caseworker established it. Under 16 rule 8 asks for "
        "the permit of each of them: without this number such a consent is not complete.",
    ),
]


class ConsentYouth(CanonicalModel):
    """The youth a consent is about; the birth date decides who must grant (rule 8)."""

    bsn: Bsn
    birth_date: date


class Consent(CanonicalModel):
    """A recorded consent for one purpose, to named recipients, for named data categories."""

    consent_id: Code | None = None
    youth: ConsentYouth
    purpose: ConsentPurpose
    recipient_organisations: list[Code] = Field(min_length=1)
    data_categories: list[DataCategory] = Field(min_length=1)
    grantors: list[Grantor] = Field(min_length=1)
    recorded_by: Code = Field(description="caseworker id")
    valid_from: date
    valid_until: date
    status: ConsentStatus = ConsentStatus.ACTIEF
    # None in consents stored before the number was asked for, and wherever it was not stated.
    custodians: Custodians | None = None

    @model_validator(mode="after")
    def _period_in_order(self) -> Consent:
        if self.valid_until < self.valid_from:
            raise ValueError("valid_until lies before valid_from")
        return self
