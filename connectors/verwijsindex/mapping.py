"""Canonical schemas ⇄ the Verwijsindex contract: what the hub sends, and what a match becomes."""

from __future__ import annotations

import re

from connectors.verwijsindex.contract import (
    TELEFOON,
    Contactpersoon,
    Geslacht,
    Jeugdige,
    Match,
    Organisatie,
    SignaalRegistratie,
)
from hub.errors import PermanentError
from schemas.caseworker import ContactDetails
from schemas.match import Match as CanonicalMatch
from schemas.match import MatchType as CanonicalMatchType
from schemas.signal import VerwijsindexSignal

_TELEFOON = re.compile(TELEFOON)
# "+31 (0)70 ...": the 0 in brackets is dialled only from within the country; after the country code
# it is wrong, so it goes.
_TRUNK = re.compile(r"\(\s*0\s*\)")


def telefoon_van(phone: str) -> str | None:
    """A phone number the hub accepted, in the form the index takes; None when it has none.

    The hub takes 4 to 40 of digits, spaces, '+', '(', ')' and '-'; the index 6 to 20 after an
    optional leading '+'. A number that fits the index and has no "(0)" after a country code goes as
    it is; any other is sent as its digits, a leading '+' kept and a "(0)" after it dropped. When
    even those are fewer than 6 or more than 20, no form fits.
    """
    text = phone.strip()
    international = text.startswith("+")
    if _TELEFOON.fullmatch(text) and not (international and _TRUNK.search(text)):
        return text
    if international:
        text = _TRUNK.sub("", text)
    compact = ("+" if international else "") + re.sub(r"[^0-9]", "", text)
    return compact if _TELEFOON.fullmatch(compact) else None


def contact_van(details: ContactDetails) -> Contactpersoon:
    """A caseworker's contact card as the index wants it (name, e-mail, phone; no organisation).

    A phone number no form of which the index takes is a PermanentError; the signals API refuses
    such a contact person before anything is queued (`hub.signals.rules.phone_problem`).
    """
    telefoon = None
    if details.phone is not None:
        telefoon = telefoon_van(details.phone)
        if telefoon is None:
            raise PermanentError(
                "the contact person's phone number does not fit the Verwijsindex contract "
                "(6 to 20 digits, optionally after a '+')"
            )
    return Contactpersoon(naam=details.name, email=details.email, telefoon=telefoon)


def registratie_van(signal: VerwijsindexSignal, organisatie: Organisatie) -> SignaalRegistratie:
    """The PUT body for a canonical signal: only the rule-11 whitelist crosses over."""
    youth = signal.youth
    return SignaalRegistratie(
        jeugdige=Jeugdige(
            bsn=youth.bsn,
            voornamen=youth.given_names,
            geslachtsnaam=youth.surname,
            geboortedatum=youth.birth_date,
            geslacht=Geslacht(youth.gender.value),
            gemeente=youth.municipality,
        ),
        organisatie=organisatie,
        contactpersoon=contact_van(signal.caseworker),
        aangemaakt=signal.created,
        einddatum=signal.end_date,
    )


def canonical_match(match: Match) -> CanonicalMatch:
    """A feed entry as the hub's Match: our signal id, the type, the counterpart's contact only."""
    other = match.tegenpartij
    return CanonicalMatch(
        match_id=match.match_id,
        signal_id=match.signaal_id,
        type=CanonicalMatchType(match.type.value),
        counterparts=[
            ContactDetails(
                name=other.contactpersoon.naam,
                organisation=other.organisatie.naam,
                email=other.contactpersoon.email,
                phone=other.contactpersoon.telefoon,
            )
        ],
    )
