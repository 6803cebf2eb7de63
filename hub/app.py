"""App wiring: the one module that knows every component and router."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from hub.api import health
from hub.api.problems import install_problem_handlers
from hub.api.referrals import router as referrals_router
from hub.api.transaction import TransactionIdMiddleware
from hub.config import Settings
from hub.intake.component import register_intake
from hub.ops import wiring as ops
from hub.runtime import Hub, Registrar

# Component name -> what it registers on the spine. Grows as components are built.
REGISTRARS: dict[str, list[Registrar]] = {"intake": [register_intake]}
REGISTRARS.setdefault("api", []).append(ops.register)  # lag sampler of the operator console


def create_app(
    settings: Settings, *, hub: Hub | None = None, on_ready: Callable[[Hub], None] | None = None
) -> FastAPI:
    """The hub's FastAPI app; its lifespan starts and stops the whole hub."""
    hub = hub or Hub(settings, registrars=REGISTRARS)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            if on_ready is not None:
                on_ready(hub)
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
    app.include_router(health.router)
    app.include_router(ops.router)
    app.include_router(referrals_router)
    app.add_middleware(TransactionIdMiddleware)
    return app
