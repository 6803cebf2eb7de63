"""A warm handover of a Halt case to a receiving organisation."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from schemas._base import CanonicalModel, Code, Moment, Name, ShortText
from schemas.consent import DataCategory


class HandoverStatus(StrEnum):
    """Where a handover stands."""

    WACHT_OP_TOESTEMMING = "WACHT_OP_TOESTEMMING"
    VERZONDEN = "VERZONDEN"
    ONTVANGEN = "ONTVANGEN"
    GEACCEPTEERD = "GEACCEPTEERD"
    GEWEIGERD = "GEWEIGERD"
    VERLOPEN = "VERLOPEN"
    INGETROKKEN = "INGETROKKEN"


class ReceiverType(StrEnum):
    """Kinds of receiving organisation."""

    JONGERENWERK = "JONGERENWERK"
    WIJKTEAM = "WIJKTEAM"
    JEUGDHULP = "JEUGDHULP"
    VERSLAVINGSZORG = "VERSLAVINGSZORG"


class JointMeeting(CanonicalModel):
    """The planned meeting of youth, caseworker and receiver: the 'warm' part."""

    planned_at: Moment
    location: Name
    note: ShortText | None = None


class Handover(CanonicalModel):
    """A request to hand a case over, with the consent it relies on and a minimised summary."""

    handover_id: Code | None = None
    referral_id: Code
    from_caseworker: Code
    receiver_organisation: Code
    receiver_type: ReceiverType
    consent_id: Code | None = None
    data_categories: list[DataCategory] = Field(min_length=1)
    summary: ShortText
    status: HandoverStatus = HandoverStatus.WACHT_OP_TOESTEMMING
    joint_meeting: JointMeeting | None = None
