"""The blog's two test suites (``examples/blog_asyncdal/tests`` for asyncdal, and
``examples/blog_advanced_alchemy/tests``) run as a user runs them, on the test server.

Each runs in a pytest of its own, from its own folder, as in the user's project it stands
for: its conftest, its settings and its warnings filter are that project's, not this
repository's.
"""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITES = {
    "blog_asyncdal": ROOT / "examples" / "blog_asyncdal" / "tests",
    "blog_advanced_alchemy": ROOT / "examples" / "blog_advanced_alchemy" / "tests",
}
# advanced-alchemy 1.12 decorates its mixins with SQLAlchemy 2.1's deprecated declarative_mixin;
# this repository's pytest makes every warning an error.
AA_WARNING = "ignore:The declarative_mixin decorator:DeprecationWarning"


def _test_names(suite: Path) -> set[str]:
    names: set[str] = set()
    for path in suite.glob("test_*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.AsyncFunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_both_suites_test_the_same_contract() -> None:
    """One test per behaviour on each side, named alike: the line counts compare equals."""
    asyncdal, advanced_alchemy = (_test_names(suite) for suite in SUITES.values())
    assert asyncdal
    assert asyncdal == advanced_alchemy


@pytest.mark.parametrize("example", sorted(SUITES))
async def test_the_suite_passes_on_postgresql(example: str, server_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-c",
        str(ROOT / "pyproject.toml"),
        "--rootdir",
        str(ROOT),
        "-W",
        AA_WARNING,
        str(SUITES[example]),
        cwd=ROOT,
        env={**os.environ, "TEST_DATABASE_URL": server_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    # Every test ran: none skipped for want of a server.
    assert f"{len(_test_names(SUITES[example]))} passed" in text, text
    assert "skipped" not in text, text
