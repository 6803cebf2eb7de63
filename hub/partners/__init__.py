"""Partner registry: who may send what, authenticated by a hashed, rotatable API key."""

from hub.partners.auth import CurrentPartner, partner_of_type
from hub.partners.keys import PartnerType
from hub.partners.registry import Partner, add_partner, authenticate, find_partner, list_partners, rotate_key

__all__ = [
    "CurrentPartner",
    "Partner",
    "PartnerType",
    "add_partner",
    "authenticate",
    "find_partner",
    "list_partners",
    "partner_of_type",
    "rotate_key",
]
