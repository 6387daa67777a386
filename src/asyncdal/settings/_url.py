"""Database URLs: parsed and checked on their own, never repeated in an error.

Example:
    >>> parse_url("postgres://app:s3cret@db.internal/catalog").drivername
    'postgres'
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from asyncdal.settings._tls import TLS_PARAMETERS

__all__ = ["DRIVER", "parse_url"]

DRIVER = "postgresql+asyncpg"
"""The driver every URL is given: asyncpg."""
# Schemes that mean "PostgreSQL" and can safely be driven by asyncpg instead.
_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}
# URL parameters passed on to asyncpg as they are (Unix sockets, several hosts); the TLS ones
# go to asyncpg separately (see DatabaseSettings.tls_arguments).
_QUERY_KEPT = {"host", "port"}
_URL_FORMAT = "expected postgresql://user:password@host:port/name"


def parse_url(text: str) -> URL:
    """Parse a database URL and check it on its own: scheme, host, port, parameters.

    Raises:
        ValueError: never repeating the URL, which may hold a password.
    """
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ValueError(f"not a valid database URL ({_URL_FORMAT})") from None
    if url.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(
            f"unsupported scheme {url.drivername!r}: use postgresql:// or postgresql+asyncpg://"
        )
    if url.host is not None and "@" in url.host:
        raise ValueError("the host contains '@': percent-encode the password (%40)")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise ValueError(f"port {url.port} is out of range 1-65535")
    unknown = set(url.query) - _QUERY_KEPT - TLS_PARAMETERS
    if unknown:
        raise ValueError(
            f"unsupported URL parameter(s) {sorted(unknown)}; allowed: "
            f"{sorted(_QUERY_KEPT | TLS_PARAMETERS)} (use the DB__<NAME>__* settings instead)"
        )
    return url
