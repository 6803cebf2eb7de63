"""Consent to share a youth's data, shaped after the HL7 FHIR R4 Consent resource."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import Field, model_validator

from schemas._base import CanonicalModel, Code, Name
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


class Grantor(CanonicalModel):
    """One person's answer (FHIR provision.actor)."""

    role: GrantorRole
    name: Name
    permission: Permission
    given_at: datetime
    method: ConsentMethod


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

    @model_validator(mode="after")
    def _period_in_order(self) -> Consent:
        if self.valid_until < self.valid_from:
            raise ValueError("valid_until lies before valid_from")
        return self
