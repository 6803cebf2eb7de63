"""Verwijsindex Haaglanden connector: the HTTP contract, its client, and a faithful simulator.

Import the client from `connectors.verwijsindex.client` and the simulator from
`connectors.verwijsindex.simulator`; this package re-exports only the contract models, so that
importing it pulls in neither aiohttp nor FastAPI.
"""

from connectors.verwijsindex.contract import (
    TRANSACTION_HEADER,
    Contactpersoon,
    ContactWijziging,
    Fout,
    Geslacht,
    IntrekkingsReden,
    Jeugdige,
    Match,
    MatchPagina,
    MatchType,
    Organisatie,
    Signaal,
    SignaalRegistratie,
    SignaalStatus,
    Tegenpartij,
    default_einddatum,
    max_einddatum,
)

__all__ = [
    "TRANSACTION_HEADER",
    "ContactWijziging",
    "Contactpersoon",
    "Fout",
    "Geslacht",
    "IntrekkingsReden",
    "Jeugdige",
    "Match",
    "MatchPagina",
    "MatchType",
    "Organisatie",
    "Signaal",
    "SignaalRegistratie",
    "SignaalStatus",
    "Tegenpartij",
    "default_einddatum",
    "max_einddatum",
]
