"""What a browser is told and refused: security headers on every answer, and requests another site
sent with an operator's session (or to the console's login) refused."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.problems import problem_response
from hub.directory.api import router as directory_router
from hub.ops.auth import COOKIE
from hub.ops.web import POLICY

# Where an operator's browser acts with the session cookie: the console, and the caseworker directory.
CONSOLE = ("/ops/", directory_router.prefix)
_SAFE = ("GET", "HEAD", "OPTIONS")
# What a page of another site can send without asking (an HTML form, a "no-cors" fetch): refused
# where JSON, or the directory import's CSV, is expected.
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
_TAKE_FORMS = ("/ops/login", "/ops/logout")  # the login page's form, the dashboard's log-out button


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    """Host name (lower case) and port of `netloc`; the port None when it names none."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port


def _same(origin: tuple[str, int | None], host: tuple[str, int | None], scheme: str) -> bool:
    """The same host and port; a Host header without a port (a proxy that passes only the name)
    matches the origin's host on whatever port it came."""
    default = 443 if scheme == "https" else 80
    if origin[0] != host[0]:
        return False
    return host[1] is None or (origin[1] or default) == host[1]


def _has_session(headers: Headers) -> bool:
    return COOKIE in cookie_parser(headers.get("cookie", ""))


def same_site(headers: Headers) -> bool:
    """True unless the Origin header (or, lacking it or when it is "null", the Referer) names another
    host than the request's own (its Host, or X-Forwarded-Host from a proxy). A request that names
    neither (a script, the CLI) passes: browsers name the origin of every cross-site POST."""
    origin_header = headers.get("origin")
    source = origin_header if origin_header not in (None, "null") else headers.get("referer")
    if source is None:
        return origin_header is None  # "null" with no referer: a sandboxed frame, a local file
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https"):  # a data URL, a file
        return False
    origin = _host_port(parts.netloc, parts.scheme)
    if origin is None:
        return False
    hosts = [headers.get("host", ""), *headers.get("x-forwarded-host", "").split(",")]
    return any(
        (host := _host_port(h.strip(), parts.scheme)) is not None and _same(origin, host, parts.scheme)
        for h in hosts
        if h.strip()
    )


class SameSiteMiddleware:
    """A request that changes something with an operator's session (under /ops/, in the caseworker
    directory, or with the session cookie) is refused (403) when another site sent it, and (415) when
    its body is a form or text where JSON or CSV is expected. SameSite=Strict on the cookie is the
    first guard; this one also covers the login form, which has no cookie yet."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        console = path.startswith(CONSOLE)
        if not (console or _has_session(headers)):
            await self.app(scope, receive, send)
            return
        content_type = headers.get("content-type", "").lower()
        if not same_site(headers):
            response = problem_response(
                403,
                "Request from another site refused",
                "The Origin (or Referer) header names another site than this hub: a page elsewhere"
                " cannot act in the operator console. Use the console itself; behind a proxy, pass"
                " the Host header on (or set X-Forwarded-Host).",
                instance=path,
            )
        elif console and path not in _TAKE_FORMS and content_type.startswith(_FORM_TYPES):
            response = problem_response(
                415,
                "Unsupported content type",
                "Send application/json (text/csv to the directory import); forms and plain text"
                " are refused here.",
                instance=path,
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Headers that tell a browser how to treat every answer: no sniffing, no framing, no referrer to
    other sites; under /ops/ and /api/ only the hub's own scripts and styles; and no copy kept of the
    console's and the API's answers (they hold personal data and sessions)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        request_headers = Headers(scope=scope)
        ours = path.startswith(("/ops/", "/api/")) or path == "/ops"
        private = (ours and not path.startswith("/ops/static/")) or (
            "authorization" in request_headers or _has_session(request_headers)
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                # Not no-referrer: with it a browser sends "Origin: null" on the console's own
                # form posts, and SameSiteMiddleware could no longer tell them from another site's.
                headers.setdefault("Referrer-Policy", "same-origin")
                if ours:
                    headers.setdefault("Content-Security-Policy", POLICY)
                if private:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
