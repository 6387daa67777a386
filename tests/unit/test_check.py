"""The architecture check finds each violation in sample files, and nothing in the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncdal.ops._check import check_paths, check_source
from asyncdal.ops._cli import main

ROOT = Path(__file__).resolve().parents[2]

VIOLATIONS = {
    "from_import_engine": (
        "from sqlalchemy.ext.asyncio import create_async_engine\n"
        "engine = create_async_engine('postgresql+asyncpg://x')\n"
    ),
    "module_alias_engine": (
        "import sqlalchemy.ext.asyncio as sa_async\n"
        "engine = sa_async.create_async_engine('postgresql+asyncpg://x')\n"
    ),
    "sync_engine": "import sqlalchemy\nengine = sqlalchemy.create_engine('postgresql://x')\n",
    "session": "from sqlalchemy.ext.asyncio import AsyncSession\nsession = AsyncSession()\n",
    "sessionmaker": (
        "from sqlalchemy.ext.asyncio import async_sessionmaker as maker\nfactory = maker()\n"
    ),
    "asyncpg_connect": (
        "import asyncpg\nasync def f():\n    return await asyncpg.connect('postgresql://x')\n"
    ),
    "asyncpg_pool": "import asyncpg\npool = asyncpg.create_pool('postgresql://x')\n",
    "psycopg_connect": "import psycopg\nconnection = psycopg.connect('dbname=x')\n",
    "psycopg_async": (
        "from psycopg import AsyncConnection\n"
        "async def f():\n    return await AsyncConnection.connect('dbname=x')\n"
    ),
    "psycopg_pool": "from psycopg_pool import AsyncConnectionPool\npool = AsyncConnectionPool()\n",
}

SHARED = {
    "gather_same_session": (
        "import asyncio\n"
        "async def handler(session):\n"
        "    await asyncio.gather(load(session, 1), load(session, 2))\n"
    ),
    "create_task_same_uow": (
        "import asyncio\n"
        "async def handler(uow):\n"
        "    first = asyncio.create_task(save(uow))\n"
        "    second = asyncio.create_task(save(uow))\n"
    ),
    "gather_uow_session": (
        "import asyncio\n"
        "async def handler(db):\n"
        "    async with db.unit_of_work() as uow:\n"
        "        await asyncio.gather(work(uow.session, 1), work(uow.session, 2))\n"
    ),
    "gather_generator": (
        "import asyncio\n"
        "async def handler(session, ids):\n"
        "    await asyncio.gather(*(work(session, i) for i in ids))\n"
    ),
    "gather_list_comprehension": (
        "import asyncio\n"
        "async def handler(uow, ids):\n"
        "    await asyncio.gather(*[work(uow, i) for i in ids])\n"
    ),
    "create_task_uow_session": (
        "import asyncio\n"
        "async def handler(uow):\n"
        "    first = asyncio.create_task(work(uow.session, 1))\n"
        "    second = asyncio.create_task(work(uow.session, 2))\n"
        "    await asyncio.wait([first, second])\n"
    ),
    "task_group": (
        "import asyncio\n"
        "async def handler(uow):\n"
        "    async with asyncio.TaskGroup() as group:\n"
        "        group.create_task(work(uow.session, 1))\n"
        "        group.create_task(work(uow.session, 2))\n"
    ),
    "annotated_parameter": (
        "import asyncio\n"
        "from sqlalchemy.ext.asyncio import AsyncSession\n"
        "async def handler(s: AsyncSession):\n"
        "    await asyncio.gather(load(s, 1), load(s, 2))\n"
    ),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_hand_made_database_access_is_reported(name: str) -> None:
    findings = check_source(VIOLATIONS[name], Path(f"{name}.py"))
    assert [finding.code for finding in findings] == ["ADL001"]
    assert findings[0].line == VIOLATIONS[name].count("\n") or findings[0].line >= 2
    assert str(findings[0]).startswith(f"{name}.py:")


@pytest.mark.parametrize(
    "name",
    [
        "gather_same_session",
        "create_task_same_uow",
        "gather_uow_session",
        "gather_generator",
        "gather_list_comprehension",
        "create_task_uow_session",
        "task_group",
    ],
)
def test_one_session_handed_to_several_tasks_is_reported(name: str) -> None:
    findings = check_source(SHARED[name], Path(f"{name}.py"))
    assert [finding.code for finding in findings] == ["ADL002"]


def test_only_what_it_can_prove_is_reported() -> None:
    source = (
        "import asyncio\n"
        "async def handler(db, session, ids):\n"
        # each task opens its own unit of work: the comprehension's own variable is not shared
        "    await asyncio.gather(*(refresh(db, i) for i in ids))\n"
        "    await asyncio.gather(*(load(s) for s in sessions_of(ids)))\n"
        # awaited on the spot: one after the other, never at once
        "    await asyncio.create_task(work(session, 1))\n"
        "    await asyncio.create_task(work(session, 2))\n"
        # one task only
        "    await asyncio.gather(work(session, 3), other(db))\n"
        # an attribute that is no session
        "    await asyncio.gather(work(db.name, 1), work(db.name, 2))\n"
    )
    assert check_source(source, Path("ok.py")) == []


def test_a_parameter_annotated_as_a_session_is_tracked_whatever_its_name() -> None:
    findings = check_source(SHARED["annotated_parameter"], Path("a.py"))
    assert [(finding.code, finding.line) for finding in findings] == [("ADL002", 4)]
    renamed = SHARED["annotated_parameter"].replace("s: AsyncSession", "s: int")
    assert check_source(renamed, Path("b.py")) == []


def test_separate_sessions_and_unrelated_code_are_fine() -> None:
    source = (
        "import asyncio\n"
        "from asyncdal import Database\n"
        "async def handler(db: Database, session):\n"
        "    async def one(i):\n"
        "        async with db.background_unit_of_work() as uow:\n"
        "            await load(uow.session, i)\n"
        "    await asyncio.gather(one(1), one(2), load(session, 3))\n"
        "def connect():\n"
        "    return 'not a database'\n"
        "connect()\n"
    )
    assert check_source(source, Path("ok.py")) == []


def test_allow_comment_silences_one_line() -> None:
    source = (
        "import asyncpg\n"
        "a = asyncpg.connect('x')  # asyncdal: allow listener needs its own connection\n"
        "b = asyncpg.connect('x')\n"
    )
    assert [finding.line for finding in check_source(source, Path("x.py"))] == [3]


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "service"
    bad.mkdir()
    (bad / "db.py").write_text(VIOLATIONS["asyncpg_pool"])
    (bad / "clean.py").write_text("x = 1\n")
    assert main(["check", str(bad)]) == 1
    assert f"{bad / 'db.py'}:2:8: ADL001" in capsys.readouterr().out
    assert main(["check", str(bad / "clean.py")]) == 0
    assert main(["check", str(tmp_path / "missing")]) == 2
    (bad / "broken.py").write_text("def (:\n")
    assert main(["check", str(bad)]) == 2


def test_asyncdal_itself_is_skipped_and_the_catalog_is_clean() -> None:
    assert check_paths([ROOT / "src"]) == []
    assert main(["check", str(ROOT / "examples" / "catalog")]) == 0
