"""The pytest plugin in a fresh project of a user's own: loaded by its entry point alone (no
``pytest_plugins``), its app client on an app with two databases, per-test rollback across
tests, provider overrides by name committed by the middleware, and the message when the
loop-scope settings are missing.

Each test runs ``pytest`` in the project as a subprocess and reads its JUnit report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.projects import Done, FreshProject

SETTINGS = """
[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "session"
asyncio_default_test_loop_scope = "session"
filterwarnings = ["error"]
"""

APP = """
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdal import Databases, Repository, load_settings
from asyncdal.fastapi import databases_lifespan, repository_provider, setup


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class AuditEntry(Base):
    # Kept in the "audit" database (in tests, the same throwaway database as the rest).
    __tablename__ = "audit_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    what: Mapped[str] = mapped_column(String(100))


class ItemRepository(Repository[Item]):
    sortable = frozenset({"name"})
    filterable = frozenset({"name"})


class AuditRepository(Repository[AuditEntry]):
    sortable = frozenset({"id"})


class ItemIn(BaseModel):
    name: str
    price: Decimal


Items = Annotated[ItemRepository, Depends(repository_provider(ItemRepository))]
ReadItems = Annotated[ItemRepository, Depends(repository_provider(ItemRepository, read_only=True))]
Audit = Annotated[AuditRepository, Depends(repository_provider(AuditRepository, database="audit"))]


def create_app() -> FastAPI:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases.from_settings(load_settings())))
    setup(app)

    @app.post("/items", status_code=201)
    async def add(body: ItemIn, audit: Audit, items: Items) -> dict[str, object]:
        number = await audit.count() + 1
        if await items.count(filters={"name": body.name}):
            raise HTTPException(409, "taken")
        item = await items.add(Item(name=body.name, price=body.price))
        await audit.add(AuditEntry(what=f"{number}: added {body.name}"))
        return {"id": item.id, "name": item.name}

    @app.get("/audit")
    async def audit_log(audit: Audit) -> list[str]:
        return [entry.what for entry in await audit.list(order_by="id")]

    @app.get("/items")
    async def names(items: ReadItems) -> list[str]:
        return [item.name for item in await items.list(order_by="name")]

    return app
"""

CONFTEST = """
import pytest

from shop.app import Base, create_app


@pytest.fixture(scope="session")
def asyncdal_metadata():
    return Base.metadata


@pytest.fixture
def asyncdal_app():
    return create_app()


@pytest.fixture(scope="session")
def asyncdal_database_names():
    return ("main", "audit")
"""

TESTS = """
from sqlalchemy import text

from asyncdal.testing import FakeUnitOfWork
from shop.app import Item, ItemRepository


async def test_1_a_post_is_seen_by_the_test(asyncdal_client, rollback_database):
    response = await asyncdal_client.post("/items", json={"name": "kettle", "price": "9.50"})
    assert response.status_code == 201, response.text
    assert (await asyncdal_client.get("/items")).json() == ["kettle"]
    assert (await asyncdal_client.get("/audit")).json() == ["1: added kettle"]
    # The test's own Database shares the transaction the request committed into.
    async with rollback_database.read_only_unit_of_work() as uow:
        assert await uow.repository(ItemRepository).count() == 1


async def test_2_and_rolled_back_before_the_next(asyncdal_client, rollback_connection):
    assert (await asyncdal_client.get("/items")).json() == []
    assert (await asyncdal_client.get("/audit")).json() == []
    assert await rollback_connection.scalar(text("SELECT count(*) FROM items")) == 0


async def test_3_an_override_by_name_is_committed(asyncdal_client, asyncdal_override):
    uow = asyncdal_override(ItemRepository)
    assert isinstance(uow, FakeUnitOfWork)
    response = await asyncdal_client.post("/items", json={"name": "teapot", "price": "20"})
    assert response.status_code == 201, response.text
    assert uow.committed
    assert uow.commits == 1
    # The read-only provider hands out the same fake; the database saw nothing.
    assert (await asyncdal_client.get("/items")).json() == ["teapot"]
    fake = uow.repository(ItemRepository)
    assert [item.name for item in await fake.list()] == ["teapot"]


async def test_4_an_override_is_rolled_back_on_an_error(asyncdal_client, asyncdal_override):
    uow = asyncdal_override(ItemRepository)
    await uow.repository(ItemRepository).add(Item(name="cup", price=1))
    response = await asyncdal_client.post("/items", json={"name": "cup", "price": "1"})
    assert response.status_code == 409
    assert not uow.committed
    assert uow.rollbacks == 1


async def test_5_overrides_are_undone_after_the_test(asyncdal_client, asyncdal_app):
    assert asyncdal_app.dependency_overrides == {}
    assert (await asyncdal_client.get("/items")).json() == []
"""

FAKES_ONLY = """
from asyncdal.testing import FakeUnitOfWork


async def test_fakes_need_no_settings():
    async with FakeUnitOfWork() as uow:
        await uow.commit()
    assert uow.committed
"""


@pytest.fixture
def project(tmp_path: Path) -> FreshProject:
    """A fresh project: a tiny FastAPI app on asyncdal, its conftest, and its tests."""
    project = FreshProject(tmp_path / "shop")
    project.write("pyproject.toml", SETTINGS)
    project.write("shop/__init__.py", "")
    project.write("shop/app.py", APP)
    project.write("tests/__init__.py", "")
    project.write("tests/conftest.py", CONFTEST)
    project.write("tests/test_items.py", TESTS)
    return project


async def run_pytest(project: FreshProject, server_url: str, *arguments: str) -> Done:
    return await project.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        "--junitxml=report.xml",
        *arguments,
        TEST_DATABASE_URL=server_url,
        PYTHONPATH=str(project.root),
    )


def outcomes(project: FreshProject) -> dict[str, str]:
    """Each test's outcome from the JUnit report: passed, failure, error or skipped."""
    tree = ET.parse(project.root / "report.xml")
    found = {}
    for case in tree.iter("testcase"):
        children = [child.tag for child in case if child.tag in {"failure", "error", "skipped"}]
        found[case.attrib["name"]] = children[0] if children else "passed"
    return found


async def test_the_entry_point_plugin_serves_a_fresh_project(
    project: FreshProject, server_url: str
) -> None:
    assert "pytest_plugins" not in (project.root / "tests" / "conftest.py").read_text()
    done = await run_pytest(project, server_url, "tests")
    assert outcomes(project) == {
        "test_1_a_post_is_seen_by_the_test": "passed",
        "test_2_and_rolled_back_before_the_next": "passed",
        "test_3_an_override_by_name_is_committed": "passed",
        "test_4_an_override_is_rolled_back_on_an_error": "passed",
        "test_5_overrides_are_undone_after_the_test": "passed",
    }, done.output
    assert done.code == 0, done.output


@pytest.mark.parametrize("how", ["pytest_plugins", "-p"])
async def test_naming_the_plugin_module_as_well_is_harmless(
    project: FreshProject, server_url: str, how: str
) -> None:
    """Conftests written before the entry point list the plugin (or ``-p`` names it): it is
    registered once, not refused as registered twice."""
    arguments: tuple[str, ...] = ("tests", "-k", "test_1 or test_2")
    if how == "-p":
        arguments = ("-p", "asyncdal.testing.plugin", *arguments)
    else:
        project.write(
            "tests/conftest.py", 'pytest_plugins = ["asyncdal.testing.plugin"]\n' + CONFTEST
        )
    done = await run_pytest(project, server_url, *arguments)
    assert outcomes(project) == {
        "test_1_a_post_is_seen_by_the_test": "passed",
        "test_2_and_rolled_back_before_the_next": "passed",
    }, done.output


async def test_the_rollback_test_would_see_a_leftover(
    project: FreshProject, server_url: str
) -> None:
    """Guards the test above: with the plugin's rollback disabled (the client's requests
    commit for real), the second test sees the first one's item."""
    project.write(
        "tests/conftest.py",
        CONFTEST
        + """

@pytest.fixture
async def rollback_connection(asyncdal_database):
    async with asyncdal_database.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection
""",
    )
    await run_pytest(project, server_url, "tests", "-k", "test_1 or test_2")
    assert outcomes(project) == {
        "test_1_a_post_is_seen_by_the_test": "passed",
        "test_2_and_rolled_back_before_the_next": "failure",
    }


@pytest.mark.parametrize(
    "settings",
    [
        '[tool.pytest.ini_options]\nasyncio_mode = "auto"\n',
        '[tool.pytest.ini_options]\nasyncio_mode = "auto"\n'
        'asyncio_default_fixture_loop_scope = "session"\n',
    ],
    ids=["neither", "fixture-scope-only"],
)
async def test_missing_loop_scopes_say_what_to_write(
    project: FreshProject, server_url: str, settings: str
) -> None:
    project.write("pyproject.toml", settings)
    done = await run_pytest(project, server_url, "tests")
    assert done.code == pytest.ExitCode.USAGE_ERROR, done.output
    assert "keep one connection in the session's event loop" in done.output
    assert 'asyncio_default_fixture_loop_scope = "session"' in done.output
    assert 'asyncio_default_test_loop_scope = "session"' in done.output
    assert "tests/test_items.py::test_1_a_post_is_seen_by_the_test" in done.output
    assert "Traceback" not in done.output


async def test_tests_without_the_database_fixtures_need_no_loop_settings(
    project: FreshProject, server_url: str
) -> None:
    project.write("pyproject.toml", '[tool.pytest.ini_options]\nasyncio_mode = "auto"\n')
    project.write("tests/test_items.py", FAKES_ONLY)
    done = await run_pytest(project, server_url, "tests")
    assert outcomes(project) == {"test_fakes_need_no_settings": "passed"}, done.output


async def test_a_missing_app_fixture_says_what_to_define(
    project: FreshProject, server_url: str
) -> None:
    project.write("tests/conftest.py", CONFTEST.split("@pytest.fixture\ndef asyncdal_app")[0])
    done = await run_pytest(project, server_url, "tests", "-k", "test_2")
    assert outcomes(project) == {"test_2_and_rolled_back_before_the_next": "error"}
    assert "define a fixture named asyncdal_app" in done.output


TWO_METADATAS = {
    "tests/first/conftest.py": """
        import pytest
        from sqlalchemy import Column, Integer, MetaData, Table

        metadata = MetaData()
        Table("first_things", metadata, Column("id", Integer, primary_key=True))


        @pytest.fixture(scope="session")
        def asyncdal_metadata():
            return metadata
    """,
    "tests/second/conftest.py": """
        import pytest
        from sqlalchemy import Column, Integer, MetaData, Table

        metadata = MetaData()
        Table("second_things", metadata, Column("id", Integer, primary_key=True))


        @pytest.fixture(scope="session")
        def asyncdal_metadata():
            return metadata
    """,
}

TABLES_SEEN = """
from sqlalchemy import text


async def test_{name}_sees_its_own_tables(rollback_database):
    async with rollback_database.session() as session:
        tables = await session.scalars(
            text("select tablename from pg_tables where schemaname = 'public'")
        )
        assert set(tables) == {{"{name}_things"}}
"""


async def test_each_metadata_override_gets_a_database_of_its_own(
    project: FreshProject, server_url: str
) -> None:
    """Two folders, each with its own ``asyncdal_metadata``: each test sees its folder's tables
    (the database is not the first override's for the whole session)."""
    for path, text in TWO_METADATAS.items():
        project.write(path, text)
    for name in ("first", "second"):
        project.write(f"tests/{name}/__init__.py", "")
        project.write(f"tests/{name}/test_tables.py", TABLES_SEEN.format(name=name))
    done = await run_pytest(project, server_url, "tests/first", "tests/second")
    assert outcomes(project) == {
        "test_first_sees_its_own_tables": "passed",
        "test_second_sees_its_own_tables": "passed",
    }, done.output
