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
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from asyncdal.errors import ConfigurationError
from asyncdal.settings._flat import ENV_NAMES, FLAT_NAMES, SIZING_FIELDS
from asyncdal.settings._groups import GROUPS, LAMBDA_MARKER, on_lambda
from asyncdal.settings._model import DatabaseSettings

__all__ = ["AsyncdalSettings", "load_settings"]

logger = logging.getLogger("asyncdal.settings")


def _flat_names_as_text(source: PydanticBaseSettingsSource) -> PydanticBaseSettingsSource:
    """``source``, reading a grouped setting's flat name (``DB__MAIN__REPLICA_WEIGHTS``) as
    text, as it reads every field that is neither a list nor a model.

    A flat name is no field of ``DatabaseSettings`` (``replica_weights`` fills
    ``replicas.weights``), and pydantic-settings tries JSON on a variable it finds no field
    for: ``REPLICA_WEIGHTS=3`` would be the number 3 (refused where ``(3,)`` was meant) and
    ``COMMAND_TIMEOUT=null`` no timeout at all. The fields' own validators read the text.
    """
    decode = source.decode_complex_value

    def decode_unless_flat(field_name: str, field: FieldInfo | None, value: Any) -> Any:
        if field is None and field_name in FLAT_NAMES:
            return value
        return decode(field_name, field, value)  # type: ignore[arg-type]

    source.decode_complex_value = decode_unless_flat  # type: ignore[method-assign]
    return source


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
        # DB__<NAME>__<FIELD> and no deeper: a grouped setting has one name, its flat one
        # (DB__MAIN__POOL_SIZE), so DB__MAIN__POOL__SIZE is refused as unknown.
        env_nested_max_split=2,
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources in its own order, the environment and ``.env`` reading
        the flat names as text (:func:`_flat_names_as_text`)."""
        return (
            init_settings,
            _flat_names_as_text(env_settings),
            _flat_names_as_text(dotenv_settings),
            file_secret_settings,
        )

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
            if database.pool.kind is None
            for field in SIZING_FIELDS
            if field in database.flat_fields_set
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
    """Turn a validation location into the environment variable a user would set: a grouped
    setting by its flat name (``("db", "main", "pool", "size")`` is ``DB__MAIN__POOL_SIZE``)."""
    parts = [str(part) for part in loc]
    if parts[:1] == ["database_url"]:
        return "DATABASE_URL"
    if len(parts) >= 4 and parts[0] == "db" and (parts[2], parts[3]) in ENV_NAMES:
        parts[2:4] = [ENV_NAMES[parts[2], parts[3]]]
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
    # In the environment a group given whole is a variable named like it (DB__MAIN__TIMEOUTS),
    # which is no setting: a grouped setting is read by its flat name only.
    group_given = len(location) == 3 and location[0] == "db" and location[2] in GROUPS
    if error["type"] == "extra_forbidden" or (group_given and error["type"] == "model_type"):
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
