"""The chaos table itself (no server): scenarios in the order of their numbers."""

from __future__ import annotations

from tests.chaos.load import Load
from tests.chaos.scenario import Parameters, Row, format_table


def test_the_table_follows_the_scenario_numbers_not_the_order_they_ran_in() -> None:
    parameters = Parameters.from_environment()
    ran = [Row(6, "kill -9", Load(), 0, 0, 0.0, 0.0, 1.0, notes=["six"])]
    ran.append(Row(1, "backend kills", Load(), 0, 0, 0.0, 0.0, 1.0, notes=["one"]))
    lines = format_table(ran, parameters)
    rows = [line for line in lines if line.startswith("| ") and "scenario" not in line]
    assert [row.split("|")[1].strip() for row in rows] == ["1. backend kills", "6. kill -9"]
    assert lines[-2:] == ["1. backend kills: one", "6. kill -9: six"]
