"""The documentation site's shape: every page is in the nav, every public module has an API page.

``make docs`` (``mkdocs build --strict``, in ``.ci/run``) builds it and fails on any warning;
``test_pages.py`` runs every code block of every page. What neither sees is checked here: a page
left out of the nav, a nav entry without its page, a public module without an API page.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

import asyncdal
from tests.docs.griffe_roles import SphinxRoles

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONFIG = yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _nav_pages(entries: Any) -> Iterator[str]:
    if isinstance(entries, str):
        yield entries
    elif isinstance(entries, list):
        for entry in entries:
            yield from _nav_pages(entry)
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from _nav_pages(value)


NAV = list(_nav_pages(CONFIG["nav"]))
PAGES = sorted(str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md"))


def _public_modules() -> list[str]:
    """Modules no part of whose path starts with an underscore and that declare ``__all__``
    (the layer packages, ``asyncdal.engine`` and the like, declare nothing: they are internal)."""
    names = ["asyncdal"]
    for info in pkgutil.walk_packages(asyncdal.__path__, "asyncdal."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return [name for name in names if hasattr(importlib.import_module(name), "__all__")]


def test_the_docs_and_the_nav_are_found() -> None:
    # Guards the parsing: an empty nav or folder would make the checks below pass.
    assert "index.md" in NAV
    assert len(PAGES) >= 20


def test_the_nav_lists_every_page_once() -> None:
    assert sorted(NAV) == PAGES, (
        f"pages missing from the nav: {sorted(set(PAGES) - set(NAV))}; "
        f"nav entries without a page: {sorted(set(NAV) - set(PAGES))}"
    )
    assert len(NAV) == len(set(NAV))


def test_every_public_module_has_an_api_page() -> None:
    documented = {
        match.group(1)
        for page in PAGES
        if page.startswith("reference/")
        for match in re.finditer(r"^::: ([\w.]+)\s*$", (DOCS / page).read_text(), re.MULTILINE)
    }
    public = set(_public_modules())
    assert {"asyncdal", "asyncdal.fastapi", "asyncdal.testing.plugin"} <= public
    assert documented == public, (
        f"without an API page: {sorted(public - documented)}; "
        f"not public: {sorted(documented - public)}"
    )


def test_the_api_reference_uses_the_role_extension() -> None:
    python = CONFIG["plugins"][1]["mkdocstrings"]["handlers"]["python"]
    assert python["paths"] == ["src"]
    assert python["options"]["docstring_style"] == "google"
    assert "tests/docs/griffe_roles.py:SphinxRoles" in python["options"]["extensions"]


def test_roles_become_links_to_shown_objects_or_code() -> None:
    import griffe

    package = griffe.load("asyncdal", search_paths=[str(ROOT / "src")])
    roles = SphinxRoles()
    public = roles._public_paths(package)
    scope = package["fastapi"]
    rewrite = roles.rewrite
    assert (
        rewrite(":class:`~asyncdal.fastapi.TransactionMiddleware`", scope, package, public)
        == "[`TransactionMiddleware`][asyncdal.fastapi.TransactionMiddleware]"
    )
    # An internal path is shown under the public name that exports the same object.
    assert (
        rewrite(":class:`asyncdal.orm._database.Database`", scope, package, public)
        == "[`asyncdal.orm._database.Database`][asyncdal.Database]"
    )
    # A name in the docstring's scope; a member of a public class.
    proxy = package["testing._faultproxy.FaultProxy"]
    assert (
        rewrite(":meth:`heal`", proxy, package, public)
        == "[`heal`][asyncdal.testing.FaultProxy.heal]"
    )
    # Private or stale targets become plain code; so do modules without an API page.
    assert rewrite(":func:`~asyncdal._sql.classify`", scope, package, public) == "`classify`"
    assert rewrite(":mod:`asyncdal.requestid`", scope, package, public) == "`asyncdal.requestid`"
    assert rewrite(":mod:`asyncdal.errors`", scope, package, public) == (
        "[`asyncdal.errors`][asyncdal.errors]"
    )
    # A reStructuredText literal-block marker becomes a colon before the indented block.
    assert rewrite("Load it::\n\n    x = 1\n", scope, package, public) == "Load it:\n\n    x = 1\n"
    # The section title griffe parses as examples.
    assert rewrite("Example:\n    >>> 1\n", scope, package, public) == "Examples:\n    >>> 1\n"
