"""What the app wiring needs from the operator console: one router and one registrar."""

from __future__ import annotations

from fastapi import APIRouter

from hub.ops import api, web
from hub.ops.console import register

router = APIRouter()
router.include_router(web.router)
router.include_router(api.router)

__all__ = ["register", "router"]
