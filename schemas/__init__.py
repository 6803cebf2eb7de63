"""Pydantic models only: the envelope, the canonical messages and each partner's own format."""

from schemas.bsn import Bsn, is_valid_bsn
from schemas.caseworker import Absence, Caseworker, ContactDetails, Team
from schemas.consent import (
    Consent,
    ConsentMethod,
    ConsentPurpose,
    ConsentStatus,
    ConsentYouth,
    DataCategory,
    Grantor,
    GrantorRole,
    Permission,
)
from schemas.envelope import Envelope
from schemas.handover import Handover, HandoverStatus, JointMeeting, ReceiverType
from schemas.match import Match, MatchType
from schemas.notification import MailNotification
from schemas.problems import FieldProblem, PartnerFormatError
from schemas.referral import (
    Damage,
    Decision,
    DecisionReason,
    Gender,
    Guardian,
    GuardianRelation,
    Offence,
    Outcome,
    Reason,
    Referral,
    Referrer,
    ReferrerType,
    Track,
    Truancy,
    Youth,
)
from schemas.signal import SignalStatus, SignalYouth, VerwijsindexSignal, WithdrawalReason

__all__ = [
    "Absence",
    "Bsn",
    "Caseworker",
    "Consent",
    "ConsentMethod",
    "ConsentPurpose",
    "ConsentStatus",
    "ConsentYouth",
    "ContactDetails",
    "Damage",
    "DataCategory",
    "Decision",
    "DecisionReason",
    "Envelope",
    "FieldProblem",
    "Gender",
    "Grantor",
    "GrantorRole",
    "Guardian",
    "GuardianRelation",
    "Handover",
    "HandoverStatus",
    "JointMeeting",
    "MailNotification",
    "Match",
    "MatchType",
    "Offence",
    "Outcome",
    "PartnerFormatError",
    "Permission",
    "Reason",
    "ReceiverType",
    "Referral",
    "Referrer",
    "ReferrerType",
    "SignalStatus",
    "SignalYouth",
    "Team",
    "Track",
    "Truancy",
    "VerwijsindexSignal",
    "WithdrawalReason",
    "Youth",
    "is_valid_bsn",
]
