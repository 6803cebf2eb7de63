"""Canonical schemas ⇄ the Verwijsindex contract: what the hub sends, and what a match becomes."""

from __future__ import annotations

from connectors.verwijsindex.contract import (
    Contactpersoon,
    Geslacht,
    Jeugdige,
    Match,
    Organisatie,
    SignaalRegistratie,
)
from schemas.caseworker import ContactDetails
from schemas.match import Match as CanonicalMatch
from schemas.match import MatchType as CanonicalMatchType
from schemas.signal import VerwijsindexSignal


def contact_van(details: ContactDetails) -> Contactpersoon:
    """A caseworker's contact card as the index wants it (name, e-mail, phone; no organisation)."""
    return Contactpersoon(naam=details.name, email=details.email, telefoon=details.phone)


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
