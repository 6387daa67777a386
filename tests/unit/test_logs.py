"""configure_logging: text by default, JSON lines with LOG_FORMAT=json, request id in both."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from asyncdal import ConfigurationError, configure_logging, request_id_scope


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def emit(handler: logging.Handler) -> str:
    stream = io.StringIO()
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logger = logging.getLogger("asyncdal.tests.logs")
    with request_id_scope("req-9"):
        logger.warning(
            "slow statement on %s", "main", extra={"database": "main", "duration_ms": 12.5}
        )
    logger.warning("no request")
    return stream.getvalue()


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_carry_the_request_id_and_extra_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    first, second = emit(configure_logging()).splitlines()
    record = json.loads(first)
    assert record["message"] == "slow statement on main"
    assert record["level"] == "WARNING"
    assert record["logger"] == "asyncdal.tests.logs"
    assert record["request_id"] == "req-9"
    assert record["database"] == "main"
    assert record["duration_ms"] == 12.5
    assert "time" in record
    assert "request_id" not in json.loads(second)


@pytest.mark.usefixtures("restore_root_logger")
def test_text_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    first, second = emit(configure_logging()).splitlines()
    assert first.endswith("WARNING asyncdal.tests.logs [req-9] slow statement on main")
    assert second.endswith("[-] no request")


@pytest.mark.usefixtures("restore_root_logger")
def test_a_second_call_replaces_the_first_handler() -> None:
    first = configure_logging("text")
    second = configure_logging("json")
    handlers = logging.getLogger().handlers
    assert second in handlers
    assert first not in handlers


@pytest.mark.usefixtures("restore_root_logger")
def test_an_unknown_format_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(ConfigurationError, match="LOG_FORMAT"):
        configure_logging()
