"""Liveness, readiness and the AsyncAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from hub.api.problems import RETRY_AFTER_S
from hub.runtime import Hub

router = APIRouter(tags=["health"])


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Always 200 while the process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz", summary="Broker, store and partners reachable", responses={503: {"description": "not ready"}}
)
async def readyz(request: Request) -> JSONResponse:
    """200 when every dependency answers; 503 naming the ones that do not, with the kind of error
    only (anyone may call this: why, in the partner's words, is on the operators' console)."""
    hub = _hub(request)
    checks = await hub.readiness() if hub.started else {"hub": "starting"}
    ready = all(v == "ok" for v in checks.values())
    checks = {
        name: value if value in ("ok", "starting") else value.split(":")[0] for name, value in checks.items()
    }
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": str(RETRY_AFTER_S)},
    )


@router.get("/asyncapi.json", summary="AsyncAPI document of the hub's topics")
async def asyncapi_json(request: Request) -> JSONResponse:
    """FastStream's generated AsyncAPI 3.0 document."""
    return JSONResponse(_asyncapi(_hub(request)))


@router.get("/asyncapi", response_class=HTMLResponse, summary="AsyncAPI document, readable")
async def asyncapi_html(request: Request) -> HTMLResponse:
    """A plain HTML rendering of the channels (no external scripts: the hub works offline)."""
    doc = _asyncapi(_hub(request))
    rows = "".join(
        f"<tr><td>{name}</td><td>{ch.get('address', '')}</td><td>{ch.get('description', '') or ''}</td></tr>"
        for name, ch in sorted(doc.get("channels", {}).items())
    )
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>ketenhub AsyncAPI</title>"
        "<h1>ketenhub AsyncAPI</h1><p><a href='/asyncapi.json'>asyncapi.json</a></p>"
        "<table border=1 cellpadding=4><tr><th>channel</th><th>address</th><th>description</th></tr>"
        f"{rows}</table>"
    )


def _asyncapi(hub: Hub) -> dict[str, Any]:
    from faststream.specification import AsyncAPI

    if hub.broker is None:
        return {"asyncapi": "3.0.0", "info": {"title": "ketenhub", "version": "0.1.0"}, "channels": {}}
    spec = AsyncAPI(
        hub.broker, title="ketenhub", version="0.1.0", description="Messaging hub of Halt Den Haag"
    )
    result: dict[str, Any] = spec.to_specification().to_jsonable()
    return result
