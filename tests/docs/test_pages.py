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
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


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
    assert len([b for b in blocks_of(ROOT / "README.md") if b.language == "python"]) >= 5


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
