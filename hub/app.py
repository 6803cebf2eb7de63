"""App wiring: the one module that knows every component and router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from connectors.mail.component import register_mail
from connectors.verwijsindex.component import register_verwijsindex
from hub.api import health
from hub.api.address import RefuseControlCharactersMiddleware
from hub.api.limits import LimitBodyMiddleware
from hub.api.partner_lane import PartnerLaneMiddleware
from hub.api.problems import document_problems, install_problem_handlers
from hub.api.referrals import partner_lanes
from hub.api.referrals import router as referrals_router
from hub.api.transaction import TransactionIdMiddleware
from hub.config import Settings
from hub.consent.api import router as consent_router
from hub.directory.api import router as directory_router
from hub.handovers.api import router as handovers_router
from hub.handovers.component import register_routing
from hub.intake.component import register_intake
from hub.notify.api import router as mails_router
from hub.notify.component import register_notify
from hub.ops import wiring as ops
from hub.ops.browser import SameSiteMiddleware, SecurityHeadersMiddleware
from hub.retention.purge import register_retention
from hub.runtime import Hub, Registrar
from hub.signals.api import router as signals_router

# Component name -> what it registers on the spine. Grows as components are built.
REGISTRARS: dict[str, list[Registrar]] = {"intake": [register_intake]}
REGISTRARS.setdefault("api", []).append(ops.register)  # lag sampler of the operator console
REGISTRARS["api"].append(register_retention)  # personal data past its term is purged
REGISTRARS.setdefault("routing", []).append(register_routing)  # consent check (rule 9), receivers' delivery
REGISTRARS.setdefault("verwijsindex", []).append(register_verwijsindex)  # signals out, matches back
REGISTRARS.setdefault("mail", []).extend([register_mail, register_notify])  # SMTP out; match mails, borging


def create_app(settings: Settings, *, hub: Hub | None = None, partner_lane: bool = True) -> FastAPI:
    """The hub's FastAPI app; its lifespan starts and stops the whole hub (`ketenhub run` serves it
    without, and starts and stops the hub itself, so that a signal during start-up is heard).
    `partner_lane=False` leaves the partners' JSON referral endpoints to FastAPI's routes alone (the
    tests compare the two)."""
    hub = hub or Hub(settings, registrars=REGISTRARS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await hub.start()
        except BaseException:
            await hub.stop()  # what had started (a producer, the store, the broker) is closed, not left
            raise
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(
        title="ketenhub",
        version="0.1.0",
        description="Messaging hub between Halt Den Haag and its chain partners.",
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.settings = settings
    install_problem_handlers(app)
    # Routes are matched in order: the partners' referral endpoints, the busiest, come first.
    app.include_router(referrals_router)
    app.include_router(health.router)
    app.include_router(ops.router)
    app.include_router(signals_router)  # caseworker API for Verwijsindex signals
    app.include_router(consent_router)
    app.include_router(handovers_router)
    app.include_router(directory_router)  # /api/v1/medewerkers (administrators)
    app.include_router(mails_router)  # /api/v1/mails: the embedded SMTP sink
    # Innermost: the partners' JSON referral endpoints without FastAPI's request machinery.
    if partner_lane:
        app.add_middleware(PartnerLaneMiddleware, fastapi=app, lanes=partner_lanes())
    # Caps every body before a handler or dependency reads it (read_body's limit); innermost, so its
    # 413 carries the transaction id.
    app.add_middleware(LimitBodyMiddleware, limit=hub.settings.http.max_body_bytes)
    app.add_middleware(RefuseControlCharactersMiddleware)  # inside: its 400 carries the transaction id
    app.add_middleware(SameSiteMiddleware)  # inside too: a refusal of /api/ carries the transaction id
    app.add_middleware(TransactionIdMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: on every answer, refusals included
    document_problems(app)
    return app
