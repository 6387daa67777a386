"""The catalog's settings defaults: the reference database is optional unless said otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncdal import load_settings
from catalog.container import CatalogContainer, reference_optional_by_default

MAIN = "postgresql://u@h/main"
REFERENCE = "postgresql://u@h/reference"


def test_reference_is_optional_by_default_and_main_is_not() -> None:
    settings = reference_optional_by_default(
        load_settings(db={"main": {"url": MAIN}, "reference": {"url": REFERENCE}})
    )
    assert settings.databases["reference"].optional is True
    assert settings.databases["main"].optional is False


def test_an_explicit_optional_false_is_kept() -> None:
    settings = reference_optional_by_default(
        load_settings(
            db={"main": {"url": MAIN}, "reference": {"url": REFERENCE, "optional": False}}
        )
    )
    assert settings.databases["reference"].optional is False


def test_the_container_reads_the_environment_with_the_catalog_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DB__REFERENCE__OPTIONAL", raising=False)
    monkeypatch.setenv("DB__MAIN__URL", MAIN)
    monkeypatch.setenv("DB__REFERENCE__URL", REFERENCE)
    assert CatalogContainer().settings().databases["reference"].optional is True
    monkeypatch.setenv("DB__REFERENCE__OPTIONAL", "false")
    assert CatalogContainer().settings().databases["reference"].optional is False
