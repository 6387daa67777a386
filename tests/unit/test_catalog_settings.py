"""The catalog's settings defaults: the reference database is optional unless said otherwise."""

from __future__ import annotations

import logging
import os
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


def test_database_url_alone_makes_the_main_database_the_reference_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from catalog.lambda_handler import lambda_settings

    monkeypatch.chdir(tmp_path)  # no developer's .env
    for name in [name for name in os.environ if name.upper().startswith("DB__")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", MAIN)
    with caplog.at_level(logging.INFO, logger="catalog"):
        settings = CatalogContainer().settings()
    reference = settings.databases["reference"]
    assert reference.sqlalchemy_url() == settings.databases["main"].sqlalchemy_url()
    assert "the reference database is the main database" in caplog.text
    # Lambda reads the same settings (a null pool for each database).
    assert lambda_settings().databases["reference"].sqlalchemy_url() == reference.sqlalchemy_url()
    # An explicit reference database is kept, and nothing is said.
    caplog.clear()
    monkeypatch.setenv("DB__REFERENCE__URL", REFERENCE)
    with caplog.at_level(logging.INFO, logger="catalog"):
        settings = CatalogContainer().settings()
    assert settings.databases["reference"].sqlalchemy_url().database == "reference"
    assert "the reference database" not in caplog.text
