"""Caseworker identity for the caseworker API: the `X-Medewerker` header, checked against the directory.

Until caseworkers sign in through Halt's identity provider, the case system (Aurah) or the portal
in front of the hub states which caseworker acts; the hub accepts only active caseworkers it knows.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from hub.api.problems import Problem
from hub.directory import CaseworkerNotFound, get_caseworker
from schemas.caseworker import Caseworker

HEADER = "X-Medewerker"


async def current_caseworker(
    request: Request,
    x_medewerker: Annotated[
        str | None, Header(alias=HEADER, description="id of the acting caseworker")
    ] = None,
) -> Caseworker:
    """The acting caseworker; 401 when the header is missing or names no active caseworker."""
    hub = request.app.state.hub
    if hub.store is None:
        raise Problem(503, "De hub start nog", "Probeer het over enkele seconden opnieuw.")
    if not x_medewerker:
        raise Problem(401, "Niet geauthenticeerd", f"Stuur de medewerker-id mee in de header {HEADER}.")
    try:
        async with hub.store.transaction() as session:
            cw = await get_caseworker(session, x_medewerker.strip())
    except CaseworkerNotFound:
        cw = None
    if cw is None or not cw.active:
        raise Problem(401, "Niet geauthenticeerd", "Deze medewerker is niet bekend of niet actief.")
    return cw


CurrentCaseworker = Annotated[Caseworker, Depends(current_caseworker)]
