"""make run's choice between the configured server and the embedded one."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.devserver import database_configured


@pytest.fixture(autouse=True)
def no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("environ", "configured"),
    [
        ({}, False),
        ({"DATABASE_URL": "postgresql://u@h/n"}, True),
        ({"db__main__url": "postgresql://u@h/n"}, True),
        ({"DB__MAIN__HOST": "h"}, True),
        ({"DB__MAIN__POOL_SIZE": "3", "DB__MAIN__STATEMENT_TIMEOUT": "5"}, False),
        ({"DATABASE_URL": ""}, False),
        ({"DB__REFERENCE__URL": "postgresql://u@h/n"}, False),
    ],
)
def test_only_a_location_counts_as_configured(environ: dict[str, str], configured: bool) -> None:
    assert database_configured(environ) is configured


def test_dotenv_in_the_current_folder_counts(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://u@h/n\n")
    assert database_configured({}) is True
