"""TLS parameters of a database URL: libpq's own, checked at load and handed to asyncpg.

asyncpg follows libpq's TLS rules when it reads them from a connection string: ``sslmode``
(``prefer`` by default, which falls back to plain when the server has no TLS), the root
certificate from ``sslrootcert``, ``PGSSLROOTCERT`` or ``~/.postgresql/root.crt`` (whose
presence makes ``require`` verify the server's issuer too), client certificates, and the
``PGSSL*`` variables. So asyncdal builds no ``SSLContext`` of its own: the URL's TLS parameters
go to ``asyncpg.connect()`` as the query of an otherwise empty DSN
(``dsn="postgresql://?sslmode=..."``). asyncpg takes the host, port, user, password and
database from its keyword arguments, which SQLAlchemy's dialect fills in from the URL, and the
TLS parameters from that query, provided no ``ssl`` keyword argument is given (it would win
over ``sslmode``).

Example:
    >>> tls_dsn(tls_parameters({"sslmode": "verify-full", "sslrootcert": "/etc/ca.crt"}))
    'postgresql://?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt'
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode

__all__ = ["SSL_MODES", "TLS_PARAMETERS", "check_tls", "tls_dsn", "tls_parameters"]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
"""libpq's ``sslmode`` values, weakest first."""

TLS_PARAMETERS = frozenset(
    {
        "ssl",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
    }
)
"""URL parameters about TLS: libpq's, and ``ssl`` (asyncpg's name of ``sslmode``)."""

_NEGOTIATIONS = ("postgres", "direct")
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl")


def tls_parameters(query: Mapping[str, str | tuple[str, ...]]) -> dict[str, str]:
    """The TLS parameters of a URL's query, with ``ssl`` spelled ``sslmode``.

    An empty value counts as not given, as in libpq.

    Raises:
        ValueError: a parameter is given twice, or both ``ssl`` and ``sslmode`` are.
    """
    parameters: dict[str, str] = {}
    for key, value in query.items():
        if key not in TLS_PARAMETERS:
            continue
        if isinstance(value, tuple):
            raise ValueError(f"{key} is given more than once")
        if value:
            parameters[key] = value
    if "ssl" in parameters:
        if "sslmode" in parameters:
            raise ValueError("give sslmode or ssl, not both")
        parameters["sslmode"] = parameters.pop("ssl")
    return parameters


def tls_dsn(parameters: Mapping[str, str]) -> str:
    """A DSN holding only these parameters, for ``asyncpg.connect(dsn=...)``."""
    return "postgresql://?" + urlencode(parameters)


def check_tls(parameters: Mapping[str, str]) -> None:
    """Check what can be checked before connecting: values, files, and that a ``verify-*``
    mode has a root certificate to verify with.

    Args:
        parameters: as :func:`tls_parameters` returns them.

    Raises:
        ValueError: naming the parameter that is wrong (and never showing ``sslpassword``).
    """
    mode = parameters.get("sslmode")
    _check_choice(parameters, "sslmode", SSL_MODES)
    _check_choice(parameters, "sslnegotiation", _NEGOTIATIONS)
    if parameters.get("sslnegotiation") == "direct" and mode in {"disable", "allow", "prefer"}:
        raise ValueError("sslnegotiation=direct needs sslmode=require, verify-ca or verify-full")
    low = _check_choice(parameters, "ssl_min_protocol_version", _TLS_VERSIONS)
    high = _check_choice(parameters, "ssl_max_protocol_version", _TLS_VERSIONS)
    if low is not None and high is not None and low > high:
        raise ValueError(
            f"ssl_min_protocol_version {parameters['ssl_min_protocol_version']} is above "
            f"ssl_max_protocol_version {parameters['ssl_max_protocol_version']}"
        )
    if mode == "disable":
        # asyncpg reads no certificate file then, and neither does libpq.
        return
    _check_files(parameters)
    root = parameters.get("sslrootcert")
    if mode in {"verify-ca", "verify-full"} and root is None and not _default_root_exists():
        raise ValueError(
            f"sslmode={mode} needs sslrootcert=<file of the CA certificate(s)> to verify the "
            "server with (libpq's default, ~/.postgresql/root.crt, is not there either, nor "
            "is PGSSLROOTCERT set)"
        )


def _check_choice(parameters: Mapping[str, str], name: str, choices: tuple[str, ...]) -> int | None:
    """The position of the parameter's value among ``choices`` (None when not given)."""
    value = parameters.get(name)
    if value is None:
        return None
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, not {value!r}")
    return choices.index(value)


def _check_files(parameters: Mapping[str, str]) -> None:
    if parameters.get("sslrootcert") == "system":
        raise ValueError(
            "sslrootcert=system (libpq 16's system CA store) is not supported by asyncpg: "
            "give the path of a CA bundle, e.g. /etc/ssl/certs/ca-certificates.crt"
        )
    for name in _FILES:
        value = parameters.get(name)
        if value is None:
            continue
        path = Path(value)
        if not path.exists():
            raise ValueError(f"{name}: no such file {value!r}")
        if not path.is_file():
            raise ValueError(f"{name}: {value!r} is not a file")
    # Loaded as asyncpg will load them, so a wrong file shows now, not at the first connection.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    root = parameters.get("sslrootcert")
    if root is not None:
        try:
            context.load_verify_locations(cafile=root)
        except ssl.SSLError as error:
            raise ValueError(
                f"sslrootcert: cannot load {root!r} as CA certificates ({_reason(error)})"
            ) from None
    cert, key = parameters.get("sslcert"), parameters.get("sslkey")
    if cert is not None and key is not None:
        password = parameters.get("sslpassword", "")
        try:
            context.load_cert_chain(cert, key, password=lambda: password)
        except ssl.SSLError as error:
            raise ValueError(
                f"sslcert/sslkey: cannot load the client certificate {cert!r} with the key "
                f"{key!r} ({_reason(error)}; an encrypted key needs sslpassword)"
            ) from None


def _reason(error: ssl.SSLError) -> str:
    return str(error.reason or error.strerror or error).lower().replace("_", " ")


def _default_root_exists() -> bool:
    """Whether asyncpg has a root certificate without ``sslrootcert``: ``PGSSLROOTCERT``, or
    ``~/.postgresql/root.crt`` (the home folder found as asyncpg finds it)."""
    if os.environ.get("PGSSLROOTCERT"):
        return True
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return False
    return (home / ".postgresql" / "root.crt").is_file()
