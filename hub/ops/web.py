"""Login (throttled), logout, the dashboard page and its static files, and /metrics."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import re
from functools import cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from hub.api.problems import PROBLEM_JSON, HubStarting, Problem
from hub.errors import connect_failed
from hub.logging import get_logger
from hub.ops import auth
from hub.ops.console import console_of
from hub.ops.health import Health
from hub.ops.lag import BrokersUnavailable
from hub.ops.prometheus import render
from hub.ops.throttle import login_throttle
from hub.runtime import Hub
from hub.spine.dlq import safe_error_message
from hub.spine.outbox import OutboxState, outbox_state
from hub.store import Store, store_failed

STATIC = Path(__file__).resolve().parent.parent / "static"
_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
router = APIRouter(tags=["operators"])
log = get_logger(__name__)
# The policy of every page under /ops/ (hub/app.py), which the login page widens by its one inline script.
POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


@router.get(
    "/metrics",
    summary="Prometheus metrics (open to scrapers)",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "text format"}
    },
)
async def metrics(request: Request) -> Response:
    """Lag per group and partition (kafka_exporter's names), DLQ depth, parked retries, the hub's own.

    Open without login, as Prometheus scrapes expect: the labels are topic, group and partition names,
    never personal data. Restrict it at the network (or the ingress) in production.

    When the brokers do not answer the lag probe in time, the hub's own metrics and its outbox still
    go out, with ketenhub_lag_probe_up 0: a scrape that failed as a whole would read as the hub
    being down, while it is the brokers that are slow.
    """
    hub = request.app.state.hub
    monitor = console_of(hub).monitor
    # ketenhub_ready is set by a look at the dependencies (shared with /readyz, and cached for a
    # moment): set only when /readyz was called, it was missing where nothing called it (compose's
    # health check asks /healthz), and held what the last call saw
    looked = asyncio.ensure_future(hub.readiness())
    health: Health | None = None
    outbox: OutboxState | None = None
    try:
        health = await monitor.health()
        outbox = health.outbox
    except BrokersUnavailable as exc:
        log.warning("lag not measured for /metrics", error=str(exc))
        outbox = await _outbox_unless_down(monitor.store)
    except Exception as exc:
        # The store down: the figures read from it (dead letters' actions, parked retries, the
        # outbox) cannot be had, but the scrape must not fail as a whole, or Prometheus would read the
        # hub as down and lose ketenhub_ready{dependency="store"} 0, which says what is.
        if not _store_down(exc):
            raise
        log.warning("lag not measured for /metrics: the store failed", error=safe_error_message(exc))
    finally:
        await looked
    body = render(health, outbox, hub.metrics)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _store_down(exc: BaseException) -> bool:
    """Whether `exc` says the store could not be reached or failed (not a mistake of the hub's)."""
    return store_failed(exc) or connect_failed(exc)


async def _outbox_unless_down(store: Store) -> OutboxState | None:
    """The outbox's state, or None when the store is down too."""
    try:
        return await outbox_state(store)
    except Exception as exc:
        if not _store_down(exc):
            raise
        log.warning("outbox not read for /metrics: the store failed", error=safe_error_message(exc))
        return None


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _credentials(request: Request) -> tuple[str, str, bool]:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):  # not UTF-8, not JSON, an overlong integer, too deep
            body = None
        if not isinstance(body, dict):  # malformed JSON or not an object was a 500
            raise Problem(400, "Invalid login request", "Expected a JSON object with username and password.")
        username, password = str(body.get("username", "")), str(body.get("password", ""))
        if not _encodable(username) or not _encodable(password):  # a lone surrogate: a failed login
            username, password = "", ""
        return username, password, False
    if not content_type.startswith(_FORMS):
        raise Problem(
            415,
            "Unsupported login request",
            "Send the login as application/json (username, password) or as the login page's form.",
        )
    form = await request.form()
    if "username" not in form or "password" not in form:  # the login page always sends both
        raise Problem(400, "Invalid login request", "The form needs a username and a password.")
    return str(form["username"]), str(form["password"]), True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_CREDENTIALS = {
    "type": "object",
    "properties": {"username": {"type": "string"}, "password": {"type": "string", "format": "password"}},
    "required": ["username", "password"],
}


@router.post(
    "/ops/login",
    summary="Log in (form or JSON); sets the session cookie",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _CREDENTIALS},
                "application/x-www-form-urlencoded": {"schema": _CREDENTIALS},
            },
        }
    },
    responses={
        200: {"description": "JSON login: logged in", "content": {"application/json": {}}},
        303: {"description": "Form login: to the dashboard, or back to the form when it failed"},
        429: {
            "description": "Too many failed logins for this name or from this address: wait Retry-After",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
        },
    },
)
async def login(request: Request) -> Response:
    """A session cookie (signed, HttpOnly, SameSite=Strict, Secure but on a hub of this machine only;
    the session expires server side).

    A few failed logins per minute for one name, or from one address, and the next is refused (429)
    until the oldest is a minute old; while a few password checks are under way, another waits its
    turn no longer than it takes to try again (503).
    """
    hub = request.app.state.hub
    if hub.store is None:
        raise HubStarting()
    username, password, is_form = await _credentials(request)
    address = request.client.host if request.client else "unknown"
    throttle = login_throttle(request)
    wait = throttle.wait_s(username, address)
    if wait:
        log.warning("operator login refused: too many failed logins", address=address, retry_after=wait)
        raise Problem(
            429,
            "Too many failed logins",
            f"Too many failed logins for this name or from this address; try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )
    if throttle.busy >= throttle.at_once:
        raise Problem(503, "Too many logins at once", "Try again in a second.", headers={"Retry-After": "1"})
    with throttle.attempt(username, address) as succeeded:
        cookie = await auth.login(
            hub.store,
            hub.settings.secret_value(),
            username,
            password,
            address=address,
            transaction_id=getattr(request.state, "transaction_id", None),
        )
        if cookie is not None:
            succeeded()
    if cookie is None:
        if is_form:
            return RedirectResponse("/ops/login?failed=1", status_code=303)
        raise Problem(401, "Login failed", "Unknown user or wrong password.")
    response: Response = (
        RedirectResponse("/ops/", status_code=303) if is_form else JSONResponse({"username": username})
    )
    response.set_cookie(
        auth.COOKIE,
        cookie,
        max_age=int(auth.SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=secure_cookies(hub, request),
        path="/",
    )
    return response


_PROXY_HEADERS = ("forwarded", "x-forwarded-proto", "x-forwarded-for", "x-forwarded-host")


def secure_cookies(hub: Hub, request: Request) -> bool:
    """Whether the session cookie goes over https only: always, unless the settings say otherwise or
    the hub listens on a loopback address and this request came through no proxy. The request's own
    scheme says nothing: behind a proxy that ends TLS it is http."""
    chosen: bool | None = hub.settings.http.secure_cookies
    if chosen is not None:
        return chosen
    host = hub.settings.http.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        loopback = False
    return not loopback or any(h in request.headers for h in _PROXY_HEADERS)


@router.post(
    "/ops/logout",
    summary="Log out: ends the session on the server",
    responses={303: {"description": "To the login form"}},
)
async def logout(request: Request) -> Response:
    """The cookie is cleared and its session deleted."""
    hub = request.app.state.hub
    await auth.logout(
        hub.store,
        request.cookies.get(auth.COOKIE),
        address=request.client.host if request.client else "unknown",
        transaction_id=getattr(request.state, "transaction_id", None),
    )
    response = RedirectResponse("/ops/login", status_code=303)
    response.delete_cookie(
        auth.COOKIE, path="/", secure=secure_cookies(hub, request), httponly=True, samesite="strict"
    )
    return response


@router.get("/ops/login", include_in_schema=False)
async def login_page() -> FileResponse:
    """The login form; its inline script (the "failed" note) is allowed by its hash, nothing else is."""
    return FileResponse(
        STATIC / "login.html", media_type="text/html", headers={"Content-Security-Policy": _login_policy()}
    )


@cache
def _login_policy() -> str:
    page = (STATIC / "login.html").read_text(encoding="utf-8")
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    ]
    return f"{POLICY}; script-src 'self' {' '.join(hashes)}".rstrip()


@router.get("/ops/", include_in_schema=False, response_model=None)
async def dashboard(
    operator: Annotated[auth.Operator | None, Depends(auth.optional_operator)],
) -> Response:
    """The dashboard for logged-in operators; anyone else is sent to the login page."""
    if operator is None:
        return RedirectResponse("/ops/login", status_code=303)
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


@router.get("/ops/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    """The dashboard's script and style sheet (no data in them)."""
    if name not in _FILES:
        raise Problem(404, "Not found")
    return FileResponse(STATIC / name, media_type=_FILES[name])
