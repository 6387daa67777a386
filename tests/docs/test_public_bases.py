"""The API reference shows each class's public ancestors, never a private base class."""

from __future__ import annotations

import inspect
from pathlib import Path

import griffe
import yaml

import asyncdal.errors
from tests.docs.griffe_bases import PublicBases

ROOT = Path(__file__).resolve().parents[2]


def _nearest_public(cls: type) -> list[str]:
    """What the reference should show: ``cls.__bases__``, each private one replaced by its
    own bases until they are public."""
    shown: list[str] = []
    for base in cls.__bases__:
        names = _nearest_public(base) if base.__name__.startswith("_") else [base.__name__]
        shown += [name for name in names if name not in shown]
    return shown


def _loaded() -> griffe.Module:
    package = griffe.load(
        "asyncdal",
        search_paths=[str(ROOT / "src")],
        extensions=griffe.load_extensions(PublicBases()),
    )
    assert isinstance(package, griffe.Module)
    return package


def test_the_site_uses_the_extension() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    python = config["plugins"][1]["mkdocstrings"]["handlers"]["python"]
    assert "tests/docs/griffe_bases.py:PublicBases" in python["options"]["extensions"]


def test_the_errors_show_their_public_ancestors_only() -> None:
    errors = _loaded()["errors"]
    classes = [getattr(asyncdal.errors, name) for name in asyncdal.errors.__all__]
    assert any(base.__name__.startswith("_") for cls in classes for base in cls.__bases__), (
        "no private base left to hide: this test checks nothing"
    )
    for cls in classes:
        assert inspect.isclass(cls)
        shown = [str(base) for base in errors[cls.__name__].bases]
        assert shown == _nearest_public(cls), cls.__name__
    assert [str(b) for b in errors["CommitOutcomeUnknownError"].bases] == ["AsyncdalError"]
    assert [str(b) for b in errors["QueryTimeoutError"].bases] == ["AsyncdalError", "TimeoutError"]


def test_no_class_in_the_package_shows_a_private_base() -> None:
    package = _loaded()
    found = []

    def walk(obj: griffe.Object) -> None:
        for member in obj.members.values():
            if member.is_alias:
                continue
            if isinstance(member, griffe.Class):
                found.extend(
                    f"{member.path}: {base}"
                    for base in member.bases
                    if str(base).rsplit(".", 1)[-1].startswith("_")
                )
            if isinstance(member, griffe.Module | griffe.Class):
                walk(member)

    walk(package)
    assert found == []


def test_what_an_except_clause_catches_is_unchanged() -> None:
    # The rendering changes, not the classes: the private base still holds them together.
    base = asyncdal.errors._OfDatabaseError
    assert issubclass(asyncdal.errors.CommitOutcomeUnknownError, base)
    assert issubclass(asyncdal.errors.InvalidValueError, asyncdal.errors.AsyncdalError)
