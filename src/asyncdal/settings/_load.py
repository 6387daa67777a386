"""Settings for every named database, read from the environment and from ``.env``, and the
one error that names every bad variable.

Example:
    >>> import os
    >>> os.environ["DATABASE_URL"] = "postgresql://app:s3cret@db.internal/catalog"
    >>> load_settings().databases["main"].safe_url
    'postgresql+asyncpg://app:***@db.internal/catalog'
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from asyncdal.errors import ConfigurationError
from asyncdal.settings._model import (
    LAMBDA_MARKER,
    SIZING_FIELDS,
    DatabaseSettings,
    on_lambda,
)

__all__ = ["AsyncdalSettings", "load_settings"]

logger = logging.getLogger("asyncdal.settings")


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
        # No input in error messages: it would show URLs, passwords and all.
        hide_input_in_errors=True,
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

    @model_validator(mode="after")
    def _note_sizing_dropped_on_lambda(self) -> AsyncdalSettings:
        # Said here, where the databases' names are known, once per load. The values are
        # gone already (DatabaseSettings drops them); that they were set is still known.
        if not on_lambda():
            return self
        dropped = [
            f"DB__{name.upper()}__{field.upper()}"
            for name, database in self.db.items()
            if database.pool is None
            for field in SIZING_FIELDS
            if field in database.model_fields_set
        ]
        if dropped:
            logger.info(
                "%s not used: under AWS Lambda (%s is set) the pool is null and keeps no "
                "connections (DB__<NAME>__POOL=queue would pool anyway)",
                ", ".join(dropped),
                LAMBDA_MARKER,
            )
        return self


def _variable_name(loc: tuple[int | str, ...]) -> str:
    """Turn a validation location into the environment variable a user would set."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["database_url"]:
        return "DATABASE_URL"
    return "__".join(part.upper() for part in parts) or "settings"


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    location = tuple(error["loc"])
    name = _variable_name(location)
    field, sep, rest = message.partition(": ")
    names_a_variable = bool(sep) and field.isupper() and " " not in field
    if names_a_variable and len(location) == 2 and location[0] == "db":
        # A database's own model-level check, "FIELD: problem".
        name, message = f"{name}__{field}", rest
    elif names_a_variable and field.startswith("DB"):
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
