"""Settings for every named database, read from the environment and from ``.env``.

Each named database has its own block of variables, ``DB__<NAME>__<FIELD>`` (case-insensitive),
and ``DATABASE_URL`` is shorthand for ``DB__MAIN__URL``. A missing field falls back to that
database's own default, never to another database's value.

Example:
    >>> import os
    >>> os.environ["DATABASE_URL"] = "postgresql://app:s3cret@db.internal/catalog"
    >>> settings = load_settings()
    >>> settings.databases["main"].safe_url
    'postgresql+asyncpg://app:***@db.internal/catalog'
"""

from __future__ import annotations

import json
import os
import ssl
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from asyncdal.errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "AsyncdalSettings",
    "DatabaseSettings",
    "PoolKind",
    "load_settings",
]

PoolKind = Literal["queue", "null"]
"""``queue`` (a pool, for servers) or ``null`` (a connection per use: Lambda, scripts)."""

# A fixed-size pool by default: overflow connections are opened under load and closed again as
# soon as the pool is full, and that churn cost a third of the throughput in `make bench`.
DEFAULT_POOL_SIZE = 10
"""Connections a ``queue`` pool keeps open when ``POOL_SIZE`` is not set."""
DEFAULT_MAX_OVERFLOW = 0
"""Extra connections a ``queue`` pool may open when ``MAX_OVERFLOW`` is not set."""

_DRIVER = "postgresql+asyncpg"
# Schemes that mean "PostgreSQL" and can safely be driven by asyncpg instead.
_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}
# libpq's sslmode values, all of which asyncpg's ``ssl`` argument understands as strings.
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# URL parameters passed on to asyncpg as they are, and the TLS ones turned into ``ssl``.
_QUERY_KEPT = {"host", "port"}
_QUERY_TLS = {"ssl", "sslmode", "sslrootcert", "sslcert", "sslkey"}
_LAMBDA_MARKER = "AWS_LAMBDA_FUNCTION_NAME"


class DatabaseSettings(BaseModel):
    """Connection and pool settings of one named database.

    Either ``url`` or ``host`` must be given; the parts (``host``, ``port``, ``user``,
    ``password``, ``name``) override the matching part of ``url`` when both are set, so a URL
    without a password can be combined with a password from a secret store.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr | None = None
    """Full database URL; ``postgresql://`` is accepted and driven by asyncpg."""
    host: str | None = None
    """Server host name, address, or a directory holding the Unix socket."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Server port."""
    user: str | None = None
    """Role to connect as."""
    password: SecretStr | None = None
    """Password of ``user``; never shown in logs, reprs or errors."""
    name: str | None = None
    """Database name on the server."""
    pool: PoolKind | None = None
    """``queue`` (a pool for servers) or ``null`` (no pooling: Lambda, scripts, migrations).
    Unset means ``null`` under AWS Lambda and ``queue`` everywhere else."""
    pool_size: int | None = Field(default=None, ge=0)
    """Connections kept open by a ``queue`` pool (default 10)."""
    max_overflow: int | None = Field(default=None, ge=0)
    """Extra connections a ``queue`` pool may open under load and close again (default 0)."""
    pool_timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for a free connection before giving up."""
    pool_recycle: int = Field(default=1800, ge=-1)
    """Seconds after which a pooled connection is replaced; -1 never replaces."""
    pre_ping: bool = False
    """Test each connection with a round trip when it leaves the pool."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds allowed to open a connection."""
    command_timeout: float | None = Field(default=30.0, gt=0)
    """Client-side limit in seconds for one statement (asyncpg's ``command_timeout``). Finite
    by default: without it a statement on a connection whose server went silent (a dropped
    link, a blackholed host) waits for ever, and nothing counts it as a failure."""
    statement_timeout: float | None = Field(default=None, gt=0)
    """Server-side limit in seconds for one statement (PostgreSQL's ``statement_timeout``)."""
    lock_timeout: float | None = Field(default=None, gt=0)
    """Server-side limit in seconds to wait for a lock (PostgreSQL's ``lock_timeout``)."""
    idle_in_transaction_session_timeout: float | None = Field(default=None, gt=0)
    """Seconds after which the server ends a session left idle inside a transaction."""
    retry_attempts: int = Field(default=3, ge=1)
    """Attempts (the first included) for work that is safe to retry: opening a connection, a
    read on the read-only path whose connection dropped, ``run_in_transaction``."""
    retry_base_delay: float = Field(default=0.05, ge=0)
    """Seconds of the first backoff; each further one doubles, with full jitter."""
    retry_max_delay: float = Field(default=1.0, ge=0)
    """Cap in seconds of one backoff."""
    breaker_failure_threshold: int = Field(default=5, ge=1)
    """Consecutive connection failures that open the circuit breaker."""
    breaker_cool_down: float = Field(default=5.0, gt=0)
    """Seconds the breaker stays open (failing fast) before it lets one probe through."""
    application_name: str = "asyncdal"
    """Shown in ``pg_stat_activity.application_name``."""
    optional: bool = False
    """When down, readiness reports ``degraded`` instead of failing."""
    slow_query_seconds: float | None = Field(default=None, gt=0)
    """Log statements that take at least this long (without their parameter values)."""
    tag_requests: bool = False
    """Under a request id, tag each connection's ``application_name`` with it before its first
    statement for the request, so ``pg_stat_activity`` shows which request runs a query. Off by
    default: the extra round trip per request cost 15-20% of the catalog's read throughput in
    ``make bench`` (the ``tagged`` line)."""
    pgbouncer: bool = False
    """A transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy) is in front: no statement
    caches, unique prepared-statement names, and ``statement_timeout`` set per transaction."""
    replicas: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Streaming replicas that serve reads: URLs, comma-separated or a JSON list. A part a
    replica URL leaves out (user, password, database name, port) is this database's own."""
    replica_weights: Annotated[tuple[int, ...] | None, NoDecode] = None
    """Share of plain reads per replica, in the order of ``replicas`` (default: all 1)."""
    replica_pool_size: int | None = Field(default=None, ge=1)
    """Pool size of each replica's engine (default: this database's ``pool_size``)."""
    replica_max_overflow: int | None = Field(default=None, ge=0)
    """Overflow of each replica's engine (default: this database's ``max_overflow``)."""
    max_replica_lag: float = Field(default=30.0, gt=0)
    """Seconds of replay lag after which a replica is taken out of rotation."""
    replica_check_interval: float = Field(default=2.0, gt=0)
    """Seconds between background checks of each replica (health, lag, replay position)."""
    strict_budget: bool = False
    """Refuse to start when the pools of every engine on this database's server, times the
    worker processes, exceed the server's connection limit (default: only warn)."""

    @field_validator("replicas", "replica_weights", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # Environment values arrive as text: a JSON list, or items separated by commas.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("not a valid JSON list") from None
        return [item.strip() for item in text.split(",") if item.strip()]

    # Model-level messages start with "FIELD: " so that load_settings can name the variable.
    @model_validator(mode="after")
    def _check(self) -> DatabaseSettings:
        if self.url is None and self.host is None:
            raise ValueError("URL: missing (set the URL, or HOST with PORT, USER, PASSWORD, NAME)")
        try:
            self.sqlalchemy_url()
            self.ssl_argument()
        except (ValueError, OSError) as exc:
            raise ValueError(f"URL: {exc}") from None
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError(
                f"RETRY_MAX_DELAY: {self.retry_max_delay} is below RETRY_BASE_DELAY "
                f"({self.retry_base_delay})"
            )
        if self.pool_class == "queue" and self.pool_size == 0:
            # SQLAlchemy reads a queue pool of size 0 as "unlimited connections".
            raise ValueError(
                "POOL_SIZE: must be at least 1 for a queue pool (POOL=null pools none)"
            )
        for index, replica in enumerate(self.replicas):
            try:
                # Checked as the replica's engine will use it, like the primary's URL.
                replica_settings = self._replica_settings(replica)
                replica_settings.sqlalchemy_url()
                replica_settings.ssl_argument()
            except (ValueError, OSError) as exc:
                raise ValueError(f"REPLICAS: replica {index + 1}: {exc}") from None
        if self.replica_weights is not None:
            if len(self.replica_weights) != len(self.replicas):
                raise ValueError(
                    f"REPLICA_WEIGHTS: {len(self.replica_weights)} weight(s) for "
                    f"{len(self.replicas)} replica(s); give one per replica"
                )
            if any(weight < 1 for weight in self.replica_weights):
                raise ValueError("REPLICA_WEIGHTS: every weight must be at least 1")
        if self.pool_class == "null":
            for field in ("pool_size", "max_overflow"):
                if field in self.model_fields_set:
                    raise ValueError(
                        f"{field.upper()}: cannot be set when the pool is null "
                        "(a null pool keeps no connections)"
                    )
        return self

    @property
    def pool_class(self) -> PoolKind:
        """The pool kind in force: the configured one, else ``null`` on Lambda, else ``queue``."""
        if self.pool is not None:
            return self.pool
        return "null" if os.environ.get(_LAMBDA_MARKER) else "queue"

    @property
    def effective_pool_size(self) -> int:
        """Pool size in force (0 for a ``null`` pool)."""
        if self.pool_class == "null":
            return 0
        return DEFAULT_POOL_SIZE if self.pool_size is None else self.pool_size

    @property
    def effective_max_overflow(self) -> int:
        """Overflow in force (0 for a ``null`` pool)."""
        if self.pool_class == "null":
            return 0
        return DEFAULT_MAX_OVERFLOW if self.max_overflow is None else self.max_overflow

    def sqlalchemy_url(self) -> URL:
        """The ``postgresql+asyncpg`` URL, built with ``URL.create`` so any password works.

        TLS parameters in the URL (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, or
        asyncpg's ``ssl``) are taken out of it and returned by :meth:`ssl_argument` instead;
        ``host`` and ``port`` stay (Unix sockets, several hosts). Any other query parameter is
        refused, as asyncpg would fail on it at the first connection.

        Raises:
            ValueError: the URL cannot be parsed or is not a PostgreSQL URL. The message
                never repeats the URL, which may hold a password.
        """
        if self.url is not None:
            try:
                base = make_url(self.url.get_secret_value())
            except (ArgumentError, ValueError):
                raise ValueError(
                    "not a valid database URL (expected postgresql://user:password@host:port/name)"
                ) from None
            if base.drivername not in _POSTGRES_SCHEMES:
                raise ValueError(
                    f"unsupported scheme {base.drivername!r}: use postgresql:// "
                    "or postgresql+asyncpg://"
                )
        else:
            base = URL.create(_DRIVER)
        url = base.set(
            drivername=_DRIVER,
            host=self.host if self.host is not None else base.host,
            port=self.port if self.port is not None else base.port,
            username=self.user if self.user is not None else base.username,
            password=(
                self.password.get_secret_value() if self.password is not None else base.password
            ),
            database=self.name if self.name is not None else base.database,
        )
        if url.host is not None and "@" in url.host:
            raise ValueError("the host contains '@': percent-encode the password (%40)")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise ValueError(f"port {url.port} is out of range 1-65535")
        unknown = set(url.query) - _QUERY_KEPT - _QUERY_TLS
        if unknown:
            raise ValueError(
                f"unsupported URL parameter(s) {sorted(unknown)}; allowed: "
                f"{sorted(_QUERY_KEPT | _QUERY_TLS)} (use the DB__<NAME>__* settings instead)"
            )
        return url.difference_update_query(_QUERY_TLS)

    def ssl_argument(self) -> str | ssl.SSLContext | None:
        """asyncpg's ``ssl`` argument from the URL's TLS parameters (None: asyncpg's default).

        A bare ``sslmode`` is passed through (asyncpg understands libpq's modes); with
        certificate files an ``SSLContext`` is built, following libpq: a root certificate
        means the server's certificate is verified, and ``verify-full`` checks the host name.
        """
        if self.url is None:
            return None
        query = {
            key: _single(key, value)
            for key, value in make_url(self.url.get_secret_value()).query.items()
            if key in _QUERY_TLS
        }
        mode = query.get("sslmode", query.get("ssl"))
        if mode is not None and mode not in _SSL_MODES:
            raise ValueError(f"sslmode must be one of {sorted(_SSL_MODES)}, not {mode!r}")
        root, cert, key = query.get("sslrootcert"), query.get("sslcert"), query.get("sslkey")
        if root is None and cert is None:
            return mode
        if mode == "disable":
            return mode
        context = ssl.create_default_context(cafile=root)
        context.check_hostname = mode == "verify-full"
        if root is None:
            context.verify_mode = ssl.CERT_NONE
        if cert is not None:
            context.load_cert_chain(cert, key)
        return context

    def _replica_url(self, replica: SecretStr) -> SecretStr:
        """A replica's full URL: the parts it leaves out are this database's own."""
        try:
            given = make_url(replica.get_secret_value())
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a valid database URL (expected postgresql://user:password@host:port/name)"
            ) from None
        if given.drivername not in _POSTGRES_SCHEMES:
            raise ValueError(f"unsupported scheme {given.drivername!r}: use postgresql://")
        own = self.sqlalchemy_url()
        full = given.set(
            drivername=_DRIVER,
            username=given.username if given.username is not None else own.username,
            password=given.password if given.password is not None else own.password,
            port=given.port if given.port is not None else own.port,
            database=given.database if given.database is not None else own.database,
        )
        if self.url is not None and not _QUERY_TLS & set(given.query):
            # A replica without TLS parameters of its own connects like the primary does:
            # never silently without TLS when the primary requires it.
            primary_tls = {
                key: value
                for key, value in make_url(self.url.get_secret_value()).query.items()
                if key in _QUERY_TLS
            }
            full = full.update_query_dict(primary_tls)
        return SecretStr(full.render_as_string(hide_password=False))

    def _replica_settings(self, replica: SecretStr) -> DatabaseSettings:
        update: dict[str, Any] = {
            "url": self._replica_url(replica),
            "host": None,
            "port": None,
            "user": None,
            "password": None,
            "name": None,
            "replicas": (),
            "replica_weights": None,
        }
        if self.replica_pool_size is not None:
            update["pool_size"] = self.replica_pool_size
        if self.replica_max_overflow is not None:
            update["max_overflow"] = self.replica_max_overflow
        return self.model_copy(update=update)

    def replica_settings(self) -> list[DatabaseSettings]:
        """Settings of each replica: its URL (TLS parameters, when it has none, the primary's),
        the replica pool sizes, and otherwise this database's own settings (timeouts, pooler
        mode, application name)."""
        return [self._replica_settings(replica) for replica in self.replicas]

    @property
    def weights(self) -> tuple[int, ...]:
        """The replica weights in force (1 each unless ``replica_weights`` says otherwise)."""
        if self.replica_weights is not None:
            return self.replica_weights
        return tuple(1 for _ in self.replicas)

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, fit for logs and health output."""
        return self.sqlalchemy_url().render_as_string(hide_password=True)


def _single(key: str, value: str | tuple[str, ...]) -> str:
    if isinstance(value, tuple):
        raise ValueError(f"{key} is given more than once")
    return value


class AsyncdalSettings(BaseSettings):
    """All named databases, read from the environment and ``.env``.

    Example:
        ``DB__MAIN__URL=postgresql://app@db/catalog`` and ``DB__REFERENCE__HOST=ref-db`` give
        ``settings.databases["main"]`` and ``settings.databases["reference"]``.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    database_url: SecretStr | None = None
    """Shorthand for ``DB__MAIN__URL``; ``DB__MAIN__URL`` wins when both are set."""
    db: dict[str, DatabaseSettings] = Field(default_factory=dict)
    """Settings of each named database, by lower-case name (``DB__<NAME>__<FIELD>``)."""
    web_concurrency: int = Field(default=1, ge=1)
    """Worker processes serving the app (``WEB_CONCURRENCY``, as uvicorn and gunicorn read
    it); each has its own pools, which the connection budget multiplies by this."""

    @model_validator(mode="before")
    @classmethod
    def _assemble(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        raw = data.get("db") or {}
        if not isinstance(raw, dict):
            raise ValueError("DB: set DB__<NAME>__<FIELD> variables, not DB itself")
        blocks: dict[str, dict[str, Any]] = {}
        for name, block in raw.items():
            if not isinstance(block, dict):
                raise ValueError(
                    f"DB__{str(name).upper()}: a database needs fields, "
                    f"e.g. DB__{str(name).upper()}__URL"
                )
            blocks[str(name).lower()] = dict(block)
        shorthand = data.get("database_url")
        if shorthand:
            main = blocks.setdefault("main", {})
            main.setdefault("url", shorthand)
        return {**data, "db": blocks}

    @property
    def databases(self) -> dict[str, DatabaseSettings]:
        """Validated settings of each named database, by lower-case name."""
        return self.db

    @model_validator(mode="after")
    def _require_one(self) -> AsyncdalSettings:
        if not self.db:
            raise ValueError("no database is configured: set DATABASE_URL or DB__<NAME>__URL")
        return self


def _variable_name(loc: tuple[int | str, ...]) -> str:
    """Turn a validation location into the environment variable a user would set."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["database_url"]:
        return "DATABASE_URL"
    return "__".join(part.upper() for part in parts) or "settings"


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    name = _variable_name(tuple(error["loc"]))
    field, sep, rest = message.partition(": ")
    if sep and field.isupper() and name.startswith("DB__"):
        name, message = f"{name}__{field}", rest
    elif sep and field.startswith("DB") and field.isupper() and " " not in field:
        name, message = field, rest
    if name == "DB__MAIN__URL":
        name = "DB__MAIN__URL (or DATABASE_URL)"
    if error["type"] == "extra_forbidden":
        return f"{name}: unknown setting"
    return f"{name}: {message}"


def load_settings(**overrides: Any) -> AsyncdalSettings:
    """Read and validate the settings, raising one clear error if anything is wrong.

    Args:
        **overrides: values that take precedence over the environment (as keyword arguments
            of :class:`AsyncdalSettings`, e.g. ``db={"main": {"url": ...}}``).

    Raises:
        ConfigurationError: naming every bad variable; never showing a password or URL.
    """
    try:
        return AsyncdalSettings(**overrides)
    except SettingsError:
        # pydantic-settings could not even parse a value: DB=... or DB__<NAME>=<not JSON>.
        raise ConfigurationError(
            "invalid database settings:\n  DB: set DB__<NAME>__<FIELD> variables "
            "(e.g. DB__MAIN__URL), not DB or DB__<NAME> themselves"
        ) from None
    except ValidationError as exc:
        lines = sorted({_describe(error) for error in exc.errors(include_input=False)})
        raise ConfigurationError("invalid database settings:\n  " + "\n  ".join(lines)) from None
