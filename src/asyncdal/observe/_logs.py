"""Logging for a service: plain text by default, JSON lines with ``LOG_FORMAT=json``.

Every record gets the request id (see :mod:`asyncdal.requestid`) when one is set, and the
``extra`` fields asyncdal's own loggers attach (database, node, duration_ms, ...) become JSON
keys.

Example:
    >>> configure_logging()                 # LOG_FORMAT and LOG_LEVEL from the environment
    >>> configure_logging("json", level="DEBUG")
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pythonjsonlogger.json import JsonFormatter

from asyncdal.engine._create import TimedQueuePool
from asyncdal.errors import ConfigurationError
from asyncdal.observe._request_id import RequestIdFilter

__all__ = ["LoggingSettings", "configure_logging"]

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_JSON_FIELDS = ["asctime", "levelname", "name", "message"]
_JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class LoggingSettings(BaseSettings):
    """``LOG_FORMAT`` (``text`` or ``json``) and ``LOG_LEVEL``, from the environment or ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="LOG_", env_file=".env", case_sensitive=False, extra="ignore", frozen=True
    )

    format: LogFormat = "text"
    level: LogLevel = "INFO"


class _AsyncdalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs, so a second call replaces it."""


def configure_logging(
    log_format: LogFormat | None = None, *, level: LogLevel | None = None
) -> logging.Handler:
    """Send the root logger's records to standard error, as text or as JSON lines.

    Calling it again replaces the handler it installed before (other handlers stay).

    Args:
        log_format: ``text`` or ``json``; ``LOG_FORMAT`` (default ``text``) when omitted.
        level: the root logger's level; ``LOG_LEVEL`` (default ``INFO``) when omitted.

    Returns:
        The installed handler.

    Raises:
        ConfigurationError: ``LOG_FORMAT`` or ``LOG_LEVEL`` has a value that is not allowed.
    """
    try:
        settings = LoggingSettings()
    except ValidationError as error:
        problems = "; ".join(
            f"LOG_{str(e['loc'][0]).upper()}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise ConfigurationError(problems) from None
    chosen_format = log_format or settings.format
    handler = _AsyncdalHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if chosen_format == "json":
        handler.setFormatter(
            JsonFormatter(_JSON_FIELDS, rename_fields=_JSON_RENAMES, timestamp=False)
        )
    elif chosen_format == "text":
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT, defaults={"request_id": "-"}))
    else:
        raise ConfigurationError(f"log format must be 'text' or 'json', not {chosen_format!r}")
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _AsyncdalHandler)]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(level or settings.level)
    # SQLAlchemy keeps its own pool chatter ("Pool disposed", ...) at WARNING unless asked;
    # our pool class logs under asyncdal.engine, so it gets the same default.
    pool_logger = logging.getLogger(f"{TimedQueuePool.__module__}.{TimedQueuePool.__name__}")
    if pool_logger.level == logging.NOTSET:
        pool_logger.setLevel(logging.WARNING)
    return handler
