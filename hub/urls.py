"""URLs as the hub shows them in logs, banners and errors: never with a secret in them."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

# A query parameter whose name holds one of these may carry a secret: asyncpg takes `?password=`,
# libpq `sslpassword`, and a driver's token or key the same way.
_SECRET_WORDS = ("pass", "secret", "key", "token", "auth", "cred")
HIDDEN = "hidden"


def shown_database_url(url: str) -> str:
    """A database URL with its password hidden, also one given as a query parameter
    (`...?password=`), which SQLAlchemy's own rendering prints as it is. Raises ValueError for a
    string that is no URL."""
    parsed = make_url(url)
    query = {
        name: HIDDEN if any(word in name.lower() for word in _SECRET_WORDS) else value
        for name, value in parsed.query.items()
    }
    return parsed.set(query=query).render_as_string(hide_password=True)


def shown_http_url(url: str) -> str:
    """An HTTP URL without its user and password (`https://user:pass@host/...`) or query: scheme,
    host, port and path."""
    return origin(url) + urlsplit(url).path


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: without its user and password, path and query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
