"""The canonical Referral (a referrer asks Halt to take a youth) and the intake Decision on it."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from schemas._base import CanonicalModel, Code, Email, Name, Phone, ShortText
from schemas.bsn import Bsn


class ReferrerType(StrEnum):
    """Who refers: the inbound partner kinds."""

    POLITIE = "POLITIE"
    BOA = "BOA"
    LEERPLICHT = "LEERPLICHT"
    PREVENTIEF = "PREVENTIEF"


class Track(StrEnum):
    """Which Halt track the referral is for."""

    HALT_STRAF = "HALT_STRAF"
    HALT_SCHOOLVERZUIM = "HALT_SCHOOLVERZUIM"
    PREVENTIEF = "PREVENTIEF"


class Reason(StrEnum):
    """Reason category of a referral (Halt's reporting categories)."""

    BALDADIG_OVERLAST = "BALDADIG_OVERLAST"
    FYSIEKE_AGRESSIE = "FYSIEKE_AGRESSIE"
    VERBALE_AGRESSIE = "VERBALE_AGRESSIE"
    DIEFSTAL = "DIEFSTAL"
    VERNIELING = "VERNIELING"
    DIGITAAL_GRENSOVERSCHRIJDEND = "DIGITAAL_GRENSOVERSCHRIJDEND"
    SCHOOLVERZUIM = "SCHOOLVERZUIM"
    VUURWERK = "VUURWERK"
    ALCOHOL_DRUGS = "ALCOHOL_DRUGS"
    OVERIG = "OVERIG"


class Gender(StrEnum):
    """Gender as the BRP records it."""

    MAN = "MAN"
    VROUW = "VROUW"
    ONBEKEND = "ONBEKEND"


class GuardianRelation(StrEnum):
    """How a guardian relates to the youth."""

    OUDER = "OUDER"
    VOOGD = "VOOGD"
    PLEEGOUDER = "PLEEGOUDER"
    OVERIG = "OVERIG"


# Which tracks each referrer kind may ask for.
TRACKS_BY_REFERRER: dict[ReferrerType, frozenset[Track]] = {
    ReferrerType.POLITIE: frozenset({Track.HALT_STRAF}),
    ReferrerType.BOA: frozenset({Track.HALT_STRAF}),
    ReferrerType.LEERPLICHT: frozenset({Track.HALT_SCHOOLVERZUIM}),
    ReferrerType.PREVENTIEF: frozenset({Track.PREVENTIEF}),
}

Euro = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]


class Referrer(CanonicalModel):
    """The referring organisation and the officer who can be contacted about the referral."""

    type: ReferrerType
    organisation: Name
    unit: Name | None = Field(default=None, description="basisteam, afdeling or kind of referrer")
    officer_name: Name | None = None
    officer_id: Code | None = Field(default=None, description="e.g. a police or BOA service number")
    email: Email | None = None
    phone: Phone | None = None


class Guardian(CanonicalModel):
    """A parent or guardian of the youth."""

    name: Name
    relation: GuardianRelation = GuardianRelation.OUDER
    has_custody: bool = True
    phone: Phone | None = None
    email: Email | None = None


class Youth(CanonicalModel):
    """The referred youth."""

    bsn: Bsn
    given_names: Name
    surname: Name = Field(description="including any prefix, e.g. 'van den Berg'")
    birth_date: date
    gender: Gender = Gender.ONBEKEND
    municipality: Name
    guardians: list[Guardian] = Field(default_factory=list, max_length=10)


class Offence(CanonicalModel):
    """What happened: for PREVENTIEF the incident that led to the referral."""

    committed_on: date
    feitcode: Code | None = None
    article: Code | None = Field(default=None, description="e.g. 'art. 310 Sr'")
    municipality: Name | None = Field(default=None, description="where it happened (pleeggemeente)")
    description: ShortText | None = None


class Truancy(CanonicalModel):
    """Unauthorised absence (schoolverzuim) over a period."""

    period_start: date
    period_end: date
    hours: int = Field(ge=0, le=10_000)
    times_late: int = Field(default=0, ge=0, le=10_000)
    school_name: Name | None = None
    school_brin: Annotated[str, StringConstraints(pattern=r"^[0-9]{2}[A-Z]{2}([0-9]{2})?$")] | None = None

    @model_validator(mode="after")
    def _period_in_order(self) -> Truancy:
        if self.period_end < self.period_start:
            raise ValueError("period_end lies before period_start")
        return self


class Damage(CanonicalModel):
    """Damage in euros: this youth's share and the whole case."""

    youth_share: Euro
    case_total: Euro

    @model_validator(mode="after")
    def _share_within_total(self) -> Damage:
        if self.youth_share > self.case_total:
            raise ValueError("youth_share exceeds case_total")
        return self


class Referral(CanonicalModel):
    """A referral of one youth by one referrer, identified by the referrer's own case reference."""

    referrer: Referrer
    case_reference: Code = Field(description="the referrer's own case reference (rule 7 key)")
    youth: Youth
    track: Track
    offence: Offence | None = None
    truancy: Truancy | None = None
    reason: Reason | None = Field(default=None, description="as the referrer states it; intake decides")
    damage: Damage | None = None
    confessed: bool | None = None
    youth_agreed: bool | None = None
    parents_agreed: bool | None = None
    parents_informed_at: date | None = None
    prior_halt_referrals: int = Field(default=0, ge=0, le=100)
    ovj_approval: bool = False
    boa_project: Code | None = Field(default=None, description="BOA project code, if any")

    @model_validator(mode="after")
    def _consistent(self) -> Referral:
        if self.track not in TRACKS_BY_REFERRER[self.referrer.type]:
            raise ValueError(f"track {self.track} is not open to referrer type {self.referrer.type}")
        if self.track is Track.HALT_SCHOOLVERZUIM:
            if self.truancy is None or self.offence is not None:
                raise ValueError("a HALT_SCHOOLVERZUIM referral has truancy and no offence")
        elif self.offence is None or self.truancy is not None:
            raise ValueError(f"a {self.track} referral has an offence and no truancy")
        return self

    @property
    def offence_date(self) -> date:
        """The reference date for age checks: the offence date, or the last day of truancy."""
        if self.offence is not None:
            return self.offence.committed_on
        assert self.truancy is not None  # guaranteed by _consistent
        return self.truancy.period_end


class Outcome(StrEnum):
    """Intake outcome."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class DecisionReason(CanonicalModel):
    """One reason behind a decision: a stable machine code and a Dutch message (no BSN or name)."""

    code: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,63}$")]
    message: ShortText
    field: Code | None = None


class Decision(CanonicalModel):
    """The intake decision on a referral, sent back to the referrer."""

    outcome: Outcome
    case_reference: Code | None = None
    reasons: list[DecisionReason] = Field(default_factory=list)
    reason_category: Reason | None = None
    rules_version: Code | None = None

    @model_validator(mode="after")
    def _rejection_has_reason(self) -> Decision:
        if self.outcome is Outcome.REJECTED and not self.reasons:
            raise ValueError("a REJECTED decision names at least one reason")
        return self

    @property
    def accepted(self) -> bool:
        """True when the referral was accepted."""
        return self.outcome is Outcome.ACCEPTED
