"""The field a reason of intake names, in its referrer's own format (each partner's DECISION_FIELDS)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from connectors import boa, leerplicht, politie, preventief
from hub.intake import FORMAT_ONGELDIG
from schemas.referral import DecisionReason

# By referrer type: a referral's format is its referrer's, over HTTP and through the partner's own
# Kafka connector alike (the stored referral and its IntakeResult keep the type).
OWN_FIELDS: Final[Mapping[str, Mapping[str, str]]] = {
    politie.REFERRER_TYPE: politie.DECISION_FIELDS,
    boa.REFERRER_TYPE: boa.DECISION_FIELDS,
    leerplicht.REFERRER_TYPE: leerplicht.DECISION_FIELDS,
    preventief.REFERRER_TYPE: preventief.DECISION_FIELDS,
}


def partner_field(reason: DecisionReason, referrer_type: str | None) -> str | None:
    """The referrer's own field (path or column header, as its format errors name it) for the field a
    reason names; None for a field its format has no equivalent of, a reason that names none, or a
    referrer without a format of its own. A format error names the field as sent already."""
    if reason.code == FORMAT_ONGELDIG:
        return reason.field
    fields = OWN_FIELDS.get(referrer_type) if referrer_type is not None else None
    return None if fields is None or reason.field is None else fields.get(reason.field)
