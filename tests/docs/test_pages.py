"""Every code block of README.md (and of the documentation pages) runs as a user would run it."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from asyncdal.testing import create_test_database, drop_test_database
from tests.conftest import plain
from tests.docs.runner import blocks_of

ROOT = Path(__file__).resolve().parents[2]
# Pages with something to run: a python block, or a file a later block uses. The rest (the API
# reference pages: a ``::: module`` line each) have no block, and no interpreter is started
# for them.
PAGES = [
    page
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    if any(block.language == "python" or block.target for block in blocks_of(page))
]


@pytest.fixture
async def page_databases(server_url: str) -> AsyncIterator[tuple[URL, URL]]:
    main = await create_test_database(server_url, prefix="page_main")
    reference = await create_test_database(server_url, prefix="page_reference")
    try:
        yield main, reference
    finally:
        await drop_test_database(main)
        await drop_test_database(reference)


def test_the_pages_have_python_to_run() -> None:
    # Guards the parsing: a page whose blocks were not found would pass without running.
    # The README is a landing page: its one example, a file and the block that runs it.
    readme = blocks_of(ROOT / "README.md")
    assert [b.target for b in readme if b.language == "python"] == ["shop.py", None]
    for name in ("index.md", "getting-started.md", "tutorial.md", "guide/settings.md"):
        assert ROOT / "docs" / name in PAGES


def test_only_the_api_reference_has_no_code_to_run() -> None:
    idle = {
        str(page.relative_to(ROOT / "docs"))
        for page in (ROOT / "docs").rglob("*.md")
        if page not in PAGES
    }
    assert all(name.startswith("reference/") for name in idle), idle


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
async def test_every_code_block_runs(
    page: Path, page_databases: tuple[URL, URL], tmp_path: Path
) -> None:
    main, reference = page_databases
    environment = {
        **os.environ,
        "DATABASE_URL": plain(main),
        "DB__REFERENCE__URL": plain(reference),
        "PYTHONPATH": str(ROOT),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "tests.docs.runner", str(page), str(tmp_path)),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, f"{err.decode()}\n{out.decode()}"
