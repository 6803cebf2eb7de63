"""What the app wiring needs from the operator console: one router and one registrar."""

from __future__ import annotations

from fastapi import APIRouter

from hub.ops import api, inzage, web
from hub.ops.console import register

router = APIRouter()
router.include_router(web.router)
router.include_router(api.router)
router.include_router(inzage.router)  # rule 20, for privacy officers

__all__ = ["register", "router"]
