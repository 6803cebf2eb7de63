"""FastAPI dependencies: the partner behind `Authorization: Bearer <key>`, and per-endpoint access."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.api.problems import Problem
from hub.partners.keys import PartnerType
from hub.partners.registry import Partner, authenticate

_bearer = HTTPBearer(auto_error=False, description="The API key `ketenhub partners add` printed")


async def current_partner(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Partner:
    """The authenticated partner; 401 (with WWW-Authenticate) when the key is missing or wrong."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "Niet geauthenticeerd",
            "Stuur de API-sleutel mee als 'Authorization: Bearer <sleutel>'.",
            headers={"WWW-Authenticate": 'Bearer realm="ketenhub"'},
        )
    hub = request.app.state.hub
    if hub.store is None:
        raise Problem(503, "De hub start nog", "Probeer het over enkele seconden opnieuw.")
    async with hub.store.read() as session:  # a lookup: it need not queue behind the writers
        partner = await authenticate(session, credentials.credentials)
    if partner is None:
        raise Problem(
            401,
            "Niet geauthenticeerd",
            "De API-sleutel is onbekend, ingetrokken of vervangen.",
            headers={"WWW-Authenticate": 'Bearer realm="ketenhub", error="invalid_token"'},
        )
    request.state.partner = partner
    return partner


CurrentPartner = Annotated[Partner, Depends(current_partner)]


def partner_of_type(*types: PartnerType) -> Callable[[Partner], Awaitable[Partner]]:
    """A dependency: the current partner, or 403 when its type may not use this endpoint."""
    allowed = ", ".join(t.value for t in types)

    async def check(partner: CurrentPartner) -> Partner:
        if partner.type not in types:
            raise Problem(
                403,
                "Geen toegang tot dit endpoint",
                f"Dit endpoint is voor partners van het type {allowed}; deze sleutel hoort bij een "
                f"partner van het type {partner.type.value}.",
            )
        return partner

    return check
