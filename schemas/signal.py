"""A signal for the Verwijsindex risicojongeren: youth identifiers and a contact, nothing more."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from schemas._base import CanonicalModel, Code, Name, ShortText
from schemas.bsn import Bsn
from schemas.caseworker import ContactDetails
from schemas.referral import Gender


class SignalStatus(StrEnum):
    """Lifecycle of a signal; a withdrawal says why (rule 15)."""

    ACTIEF = "ACTIEF"
    INGETROKKEN_ONTERECHT = "INGETROKKEN_ONTERECHT"
    BEEINDIGD_RISICO_WEG = "BEEINDIGD_RISICO_WEG"
    VERLOPEN = "VERLOPEN"


class WithdrawalReason(StrEnum):
    """Why a signal is withdrawn (rule 15)."""

    ONTERECHT = "ONTERECHT"
    RISICO_WEG = "RISICO_WEG"


class SignalYouth(CanonicalModel):
    """The only youth fields the Verwijsindex may receive (rule 11 whitelist)."""

    bsn: Bsn
    given_names: Name
    surname: Name
    birth_date: date
    gender: Gender = Gender.ONBEKEND
    municipality: Name


# The Verwijsindex takes a municipality of at most 100 characters (its contract's `gemeente`), and the
# signals table holds as much: a longer one was refused by PostgreSQL (500), or kept by SQLite and its
# registration dead-lettered. Checked on a new signal (`NewSignalYouth`), not on `SignalYouth`, through
# which stored signals are read back: one stored before this check still loads.
MUNICIPALITY_MAX = 100
Municipality = Annotated[Name, StringConstraints(max_length=MUNICIPALITY_MAX)]


class NewSignalYouth(SignalYouth):
    """The youth of a signal being registered: `SignalYouth`, within what the Verwijsindex takes."""

    municipality: Municipality


class VerwijsindexSignal(CanonicalModel):
    """One professional's registration that they are involved with a youth at risk."""

    signal_id: Code | None = None
    youth: SignalYouth
    organisation: Name
    caseworker: ContactDetails
    caseworker_id: Code | None = None
    created: date
    end_date: date
    status: SignalStatus = SignalStatus.ACTIEF
    parent_letter_sent_at: date | None = None
    youth_informed_at: date | None = None
    deferral_reason: ShortText | None = Field(default=None, description="why informing was deferred")

    @model_validator(mode="after")
    def _ends_after_creation(self) -> VerwijsindexSignal:
        if self.end_date < self.created:
            raise ValueError("end_date lies before created")
        return self
