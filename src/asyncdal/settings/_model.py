"""The settings of one named database: connection fields, and the rest grouped by concern
(pool, timeouts, retry, breaker, replicas, observability, pooler).

Every value is checked on its own when the settings are made, so that one load reports every
problem at once; what needs two values (a pool size and the pool kind, the URL and the parts
that override it) is checked as soon as both are known. The environment names stay flat
(``DB__MAIN__POOL_SIZE`` fills ``pool.size``), and so may keyword arguments in code.

Example:
    >>> settings = DatabaseSettings(url="postgresql://app:s3cret@db.internal/catalog")
    >>> settings.safe_url
    'postgresql+asyncpg://app:***@db.internal/catalog'
    >>> DatabaseSettings(url="postgresql://db/shop", pool_size=5).pool.size
    5
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode
from sqlalchemy.engine import URL, make_url

from asyncdal.settings._flat import FLAT_NAMES, SIZING_FIELDS, nest
from asyncdal.settings._groups import (
    GROUPS,
    BreakerSettings,
    FrozenSettings,
    ObservabilitySettings,
    PoolerSettings,
    PoolSettings,
    ReplicaSettings,
    RetrySettings,
    SafetySettings,
    TimeoutSettings,
    on_lambda,
)
from asyncdal.settings._tls import TLS_PARAMETERS, check_tls, tls_dsn, tls_parameters
from asyncdal.settings._url import DRIVER, parse_url

__all__ = ["DatabaseSettings"]

logger = logging.getLogger("asyncdal.settings")


class DatabaseSettings(FrozenSettings):
    """Connection settings of one named database, and the rest grouped by concern.

    Either ``url`` or ``host`` must be given; the parts (``host``, ``port``, ``user``,
    ``password``, ``name``) override the matching part of ``url`` when both are set, so a URL
    without a password can be combined with a password from a secret store.

    A grouped setting may be given by its flat name, the one the environment uses
    (``pool_size=5``, see :data:`~asyncdal.settings._flat.FLAT_NAMES`), or inside its group
    (``pool={"size": 5}``, or a :class:`PoolSettings`); it is read from its group
    (``settings.pool.size``).
    """

    # Before ``url``, so that the URL's check can tell "missing" from "given as parts".
    host: str | None = None
    """Server host name, address, or a directory holding the Unix socket."""
    url: Annotated[SecretStr | None, Field(validate_default=True)] = None
    """Full database URL; ``postgresql://`` is accepted and driven by asyncpg. Its TLS
    parameters are libpq's (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ``sslcrl``,
    ``sslpassword``, ``sslnegotiation``, ``ssl_min_protocol_version``,
    ``ssl_max_protocol_version``), with libpq's rules; ``host`` and ``port`` may be parameters
    too (Unix sockets, several hosts)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Server port."""
    user: str | None = None
    """Role to connect as."""
    password: SecretStr | None = None
    """Password of ``user``; never shown in logs, reprs or errors."""
    name: str | None = None
    """Database name on the server."""
    # A connection field: a startup parameter of every connection, like the user (libpq's
    # own application_name), that each replica and each derived pool inherits.
    application_name: str = "asyncdal"
    """Shown in ``pg_stat_activity.application_name``."""
    optional: bool = False
    """When down, readiness reports ``degraded`` instead of failing."""
    strict_budget: bool = False
    """Refuse to start when the pools of every engine on this database's server, times the
    worker processes, exceed the server's connection limit (default: only warn)."""
    # NoDecode: the environment never gives a group as such (the pool's and the replicas'
    # variables share their group's name, POOL=null and REPLICAS=url,url); its text is
    # nested by flat name, or refused.
    pool: Annotated[PoolSettings, NoDecode] = Field(default_factory=PoolSettings)
    """The connection pool (``POOL``, ``POOL_SIZE``, ``MAX_OVERFLOW``, ``POOL_TIMEOUT``,
    ``POOL_RECYCLE``, ``PRE_PING``)."""
    timeouts: Annotated[TimeoutSettings, NoDecode] = Field(default_factory=TimeoutSettings)
    """Time limits (``CONNECT_TIMEOUT``, ``COMMAND_TIMEOUT``, ``STATEMENT_TIMEOUT``,
    ``LOCK_TIMEOUT``, ``IDLE_IN_TRANSACTION_SESSION_TIMEOUT``)."""
    retry: Annotated[RetrySettings, NoDecode] = Field(default_factory=RetrySettings)
    """Retries (``RETRY_ATTEMPTS``, ``RETRY_BASE_DELAY``, ``RETRY_MAX_DELAY``)."""
    breaker: Annotated[BreakerSettings, NoDecode] = Field(default_factory=BreakerSettings)
    """The circuit breaker (``BREAKER_FAILURE_THRESHOLD``, ``BREAKER_COOL_DOWN``)."""
    # After ``pool``: under AWS Lambda the replicas' sizing depends on the pool's kind.
    replicas: Annotated[ReplicaSettings, NoDecode] = Field(default_factory=ReplicaSettings)
    """Read replicas (``REPLICAS``, ``REPLICA_WEIGHTS``, ``REPLICA_POOL_SIZE``,
    ``REPLICA_MAX_OVERFLOW``, ``MAX_REPLICA_LAG``, ``REPLICA_CHECK_INTERVAL``)."""
    observability: Annotated[ObservabilitySettings, NoDecode] = Field(
        default_factory=ObservabilitySettings
    )
    """What statements and connections show (``SLOW_QUERY_SECONDS``, ``TAG_REQUESTS``)."""
    pooler: Annotated[PoolerSettings, NoDecode] = Field(default_factory=PoolerSettings)
    """A pooler in front of the server (``PGBOUNCER``)."""
    safety: Annotated[SafetySettings, NoDecode] = Field(default_factory=SafetySettings)
    """Safety nets (``LAZY_LOADS``, ``MAX_QUERIES_PER_REQUEST``, ``LEAK_DETECTION_SECONDS``,
    ``IDLE_HOLD_SECONDS``, ``REQUEST_TIMEOUT``)."""

    def __init__(self, **data: Any) -> None:
        """Validate ``data``: the fields, each grouped setting by its flat name or inside its
        group (declared so that type checkers accept the flat names)."""
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        return nest(data) if isinstance(data, Mapping) else data

    # Checks of one field that need another read it from info.data, which holds the fields
    # above it that were valid: a field missing from it has an error of its own already.

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if url is None:
            if "host" in info.data and info.data["host"] is None:
                raise ValueError("missing (set the URL, or HOST with PORT, USER, PASSWORD, NAME)")
            return None
        parsed = parse_url(url.get_secret_value())
        check_tls(tls_parameters(parsed.query))
        return url

    @field_validator("replicas")
    @classmethod
    def _drop_replica_sizing_on_lambda(
        cls, replicas: ReplicaSettings, info: ValidationInfo
    ) -> ReplicaSettings:
        # As the pool drops its own sizing (PoolSettings): the environment chose a null pool.
        pool = info.data.get("pool")
        if pool is None or pool.kind is not None or not on_lambda():
            return replicas
        # Only those given: what was not stays out of model_fields_set (the load's log line).
        given = {"pool_size": replicas.pool_size, "max_overflow": replicas.max_overflow}
        dropped = {field: None for field, value in given.items() if value is not None}
        return replicas.model_copy(update=dropped) if dropped else replicas

    # Model-level messages start with "FIELD: " so that load_settings can name the variable.
    @model_validator(mode="after")
    def _check(self) -> DatabaseSettings:
        # Each URL checked as its engine will use it: with the parts that override it put in.
        try:
            self.sqlalchemy_url()
        except ValueError as exc:
            raise ValueError(f"URL: {exc}") from None
        for index, replica in enumerate(self.replicas.urls, 1):
            try:
                self._replica_settings(replica).sqlalchemy_url()
            except ValueError as exc:
                raise ValueError(f"REPLICAS: replica {index}: {exc}") from None
        return self

    @property
    def flat_fields_set(self) -> frozenset[str]:
        """``model_fields_set`` by the names the environment uses: the connection fields and
        the flat names of the grouped settings given explicitly (``{"url", "pool_size"}``)."""
        names = {field for field in self.model_fields_set if field not in GROUPS}
        for flat, (group, field) in FLAT_NAMES.items():
            if field in getattr(self, group).model_fields_set:
                names.add(flat)
        return frozenset(names)

    def _value(self, flat: str) -> Any:
        """The value of a grouped setting, by its flat name (``pool_size``)."""
        group, field = FLAT_NAMES[flat]
        return getattr(getattr(self, group), field)

    def _given(self) -> dict[str, Any]:
        """The settings given explicitly, groups as mappings of their own given fields."""
        given: dict[str, Any] = {}
        for field in self.model_fields_set:
            value = getattr(self, field)
            if field in GROUPS:
                value = {name: getattr(value, name) for name in value.model_fields_set}
                if not value:
                    continue
            given[field] = value
        return given

    def replace(self, **changes: Any) -> DatabaseSettings:
        """New, validated settings: these with some changed, and nothing else set.

        Example:
            >>> check = settings.replace(pool="queue", pool_size=1, retry_attempts=1)
            >>> settings.replace(timeouts={"command": None}).timeouts.command is None
            True

        Args:
            **changes: settings by field name or flat name (``pool_size=1``); a group given
                as a mapping changes only the fields it names, a group model replaces the group.

        Raises:
            ValueError: the changed settings are invalid (a ``pydantic.ValidationError``), or
                a setting is given twice.
        """
        settings = self._given()
        for key, value in nest(changes).items():
            kept = settings.get(key)
            if key in GROUPS and isinstance(value, Mapping) and isinstance(kept, dict):
                value = {**kept, **value}
            settings[key] = value
        return type(self).model_validate(settings)

    def with_null_pool(self, *, log: bool = True) -> DatabaseSettings:
        """These settings on a null pool (a connection per use), without the pool sizes a
        null pool has no use for: for scripts, one-off commands and migrations.

        Example:
            >>> engine = create_engine(load_settings().databases["main"].with_null_pool())

        Args:
            log: say in one INFO line which sizes are dropped. Off for connections of
                asyncdal's own (a probe), where the line would only puzzle.

        Returns:
            New, validated settings; everything but the pool and its sizing is kept.
        """
        dropped = [flat.upper() for flat in SIZING_FIELDS if self._value(flat) is not None]
        if dropped and log:
            logger.info(
                "%s not used: a null pool keeps no connections (with_null_pool)",
                ", ".join(dropped),
            )
        kept = self._given()
        for flat in ("pool", *SIZING_FIELDS):
            group, field = FLAT_NAMES[flat]
            if group in kept:
                kept[group].pop(field, None)
                if not kept[group]:
                    del kept[group]
        kept["pool"] = {**kept.get("pool", {}), "kind": "null"}
        return type(self).model_validate(kept)

    def sqlalchemy_url(self) -> URL:
        """The ``postgresql+asyncpg`` URL, built with ``URL.create`` so any password works.

        TLS parameters are taken out of it (:meth:`tls_arguments` hands them to asyncpg);
        ``host`` and ``port`` stay (Unix sockets, several hosts). Any other query parameter
        is refused, as asyncpg would fail on it at the first connection.

        Raises:
            ValueError: the URL cannot be parsed or is not a PostgreSQL URL. The message
                never repeats the URL, which may hold a password.
        """
        given = self.url
        base = URL.create(DRIVER) if given is None else parse_url(given.get_secret_value())
        url = base.set(
            drivername=DRIVER,
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
        return url.difference_update_query(TLS_PARAMETERS)

    def tls_arguments(self) -> dict[str, str]:
        """asyncpg ``connect()`` arguments carrying the URL's TLS parameters.

        They go to asyncpg as they are, as the query of a DSN with nothing else in it, so
        that asyncpg applies libpq's rules (see :mod:`asyncdal.settings._tls`); asyncpg takes
        everything else from its other arguments.

        Example:
            >>> DatabaseSettings(url="postgresql://db/shop?sslmode=require").tls_arguments()
            {'dsn': 'postgresql://?sslmode=require'}

        Returns:
            ``{"dsn": ...}``, or nothing when the URL has no TLS parameters (asyncpg's
            defaults then apply: ``PGSSLMODE``, else ``prefer``).
        """
        if self.url is None:
            return {}
        parameters = tls_parameters(make_url(self.url.get_secret_value()).query)
        return {"dsn": tls_dsn(parameters)} if parameters else {}

    def _replica_url(self, replica: SecretStr) -> SecretStr:
        """A replica's full URL: the parts it leaves out are this database's own."""
        given = parse_url(replica.get_secret_value())
        own = self.sqlalchemy_url()
        full = given.set(
            drivername=DRIVER,
            username=given.username if given.username is not None else own.username,
            password=given.password if given.password is not None else own.password,
            port=given.port if given.port is not None else own.port,
            database=given.database if given.database is not None else own.database,
        )
        if self.url is not None and not TLS_PARAMETERS & set(given.query):
            # A replica without TLS parameters of its own connects like the primary does:
            # never silently without TLS when the primary requires it.
            primary_tls = {
                key: value
                for key, value in make_url(self.url.get_secret_value()).query.items()
                if key in TLS_PARAMETERS
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
            "replicas": self.replicas.model_copy(update={"urls": (), "weights": None}),
        }
        sizing = {
            field: value
            for field, value in (
                ("size", self.replicas.pool_size),
                ("max_overflow", self.replicas.max_overflow),
            )
            if value is not None
        }
        if sizing:
            update["pool"] = self.pool.model_copy(update=sizing)
        return self.model_copy(update=update)

    def replica_settings(self) -> list[DatabaseSettings]:
        """Settings of each replica: its URL (TLS parameters, when it has none, the primary's),
        the replica pool sizes, and otherwise this database's own settings (timeouts, pooler
        mode, application name)."""
        return [self._replica_settings(replica) for replica in self.replicas.urls]

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, fit for logs and health output."""
        return self.sqlalchemy_url().render_as_string(hide_password=True)
