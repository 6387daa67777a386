"""Chaos scenarios: each starts its own servers and processes, breaks something under load,
and checks the same invariants (:mod:`tests.chaos.invariants`). The session ends with one
table: per scenario, the requests, the answers by status, the events, and the time to recover.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.scenario import ROWS, Parameters, Row, format_table


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def parameters() -> Parameters:
    """This run's sizes, from ``CHAOS_SCALE`` / ``CHAOS_CONCURRENCY``."""
    return Parameters.from_environment()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[Row], None]:
    """Add a scenario's row to the session's table."""
    rows = request.config.stash.setdefault(ROWS, [])
    return rows.append


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    terminalreporter.section("chaos")
    for line in format_table(rows, Parameters.from_environment()):
        terminalreporter.write_line(line)
