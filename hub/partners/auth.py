"""FastAPI dependencies: the partner behind `Authorization: Bearer <key>`, and per-endpoint access."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from hub.api.limits import noun_of, partner_rate
from hub.api.problems import PARTNER_SCHEME, HubStarting, Problem
from hub.partners.keys import PartnerType, hash_key, key_id_of
from hub.partners.registry import Partner, authenticate

_CACHE_MAX = 1_000


class KeyCache:
    """Partners whose key authenticated lately, by the key's hash (never the key), for `ttl_s`.

    Under load every request of a partner carries the same key; looking it up each time cost a
    database round trip per request. Only successes are kept, so a wrong key is always checked.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Partner]] = {}

    @staticmethod
    def _slot(key: str) -> str | None:
        key_id = key_id_of(key)
        return hash_key(key_id, key) if key_id is not None else None

    def get(self, key: str) -> Partner | None:
        """The cached partner for `key`, while fresh."""
        slot = self._slot(key)
        hit = self._entries.get(slot) if slot is not None else None
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, partner: Partner) -> None:
        """Remember a successful authentication."""
        slot = self._slot(key)
        if self.ttl_s <= 0 or slot is None:
            return
        if len(self._entries) >= _CACHE_MAX:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            if len(self._entries) >= _CACHE_MAX:
                self._entries.clear()
        self._entries[slot] = (time.monotonic() + self.ttl_s, partner)


def _key_cache(request: Request) -> KeyCache:
    cache = getattr(request.app.state, "key_cache", None)
    if not isinstance(cache, KeyCache):
        cache = KeyCache(request.app.state.hub.settings.http.key_cache_s)
        request.app.state.key_cache = cache
    return cache


class PartnerKey(SecurityBase):
    """The partner behind `Authorization: Bearer <key>`, of one of `types` (any type when none); a
    read (GET, HEAD) takes one of the partner's read tokens, a write (any method but those and
    OPTIONS) one of its write tokens, or is refused with 429 (`hub.api.limits.PartnerRate`, per hub
    process) before the endpoint reads, audits, stores or publishes anything.

    One dependency that reads the header itself: chained as FastAPI dependencies (the bearer scheme,
    the key lookup, the type check), the solving alone took about a tenth of the hub's CPU on the
    HTTP intake. It is a security scheme to FastAPI, so the OpenAPI document still names the bearer
    scheme (`HTTPBearer`) on every endpoint that uses it.
    """

    def __init__(self, *types: PartnerType) -> None:
        self.model = HTTPBearerModel(description="The API key `ketenhub partners add` printed")
        self.scheme_name = PARTNER_SCHEME  # "HTTPBearer"; the OpenAPI document adds 429 to its operations
        self.types = types
        self.allowed = ", ".join(t.value for t in types)

    async def __call__(self, request: Request) -> Partner:
        partner = await _authenticate(request)
        if self.types and partner.type not in self.types:
            raise Problem(
                403,
                "Geen toegang tot dit endpoint",
                f"Dit endpoint is voor partners van het type {self.allowed}; deze sleutel hoort bij een "
                f"partner van het type {partner.type.value}.",
            )
        noun = noun_of(request.scope["method"])
        if noun is not None:
            partner_rate(request, noun).take(partner.id)
        return partner


def _bearer_key(request: Request) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (as FastAPI's HTTPBearer reads it)."""
    scheme, _, key = (request.headers.get("Authorization") or "").partition(" ")
    key = key.strip()
    if not scheme or not key or scheme.lower() != "bearer":
        return None
    return key


async def _authenticate(request: Request) -> Partner:
    """The authenticated partner; 401 (with WWW-Authenticate) when the key is missing or wrong."""
    key = _bearer_key(request)
    if key is None:
        raise Problem(
            401,
            "Niet geauthenticeerd",
            "Stuur de API-sleutel mee als 'Authorization: Bearer <sleutel>'.",
            headers={"WWW-Authenticate": 'Bearer realm="ketenhub"'},
        )
    hub = request.app.state.hub
    if hub.store is None:
        raise HubStarting()
    cache = _key_cache(request)
    partner = cache.get(key)
    if partner is None:
        async with hub.store.read() as session:  # a lookup: it need not queue behind the writers
            partner = await authenticate(session, key)
        if partner is not None:
            cache.put(key, partner)
    if partner is None:
        raise Problem(
            401,
            "Niet geauthenticeerd",
            "De API-sleutel is onbekend, ingetrokken of vervangen.",
            headers={"WWW-Authenticate": 'Bearer realm="ketenhub", error="invalid_token"'},
        )
    request.state.partner = partner
    return partner


CurrentPartner = Annotated[Partner, Depends(PartnerKey())]


def partner_of_type(*types: PartnerType) -> PartnerKey:
    """A dependency: the current partner, or 403 when its type may not use this endpoint."""
    if not types:
        raise ValueError("partner_of_type needs at least one partner type; CurrentPartner takes any")
    return PartnerKey(*types)
