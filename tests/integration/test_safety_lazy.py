"""Lazy loads (LAZY_LOADS) and statement counting (assert_max_queries), on a real server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import ForeignKey, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncAttrs, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from asyncdal import Database, DatabaseSettings, LazyLoadError
from asyncdal.testing import assert_max_queries, create_test_database, drop_test_database
from tests.conftest import plain


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


@pytest.fixture(scope="module")
async def library_url(test_database_url: URL) -> AsyncIterator[URL]:
    url = await create_test_database(plain(test_database_url), prefix="lazy")
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        await connection.execute(
            "CREATE TABLE authors (id int PRIMARY KEY, name text NOT NULL);"
            "CREATE TABLE books (id int PRIMARY KEY, author_id int NOT NULL REFERENCES authors);"
            "INSERT INTO authors SELECT i, 'author ' || i FROM generate_series(1, 3) i;"
            "INSERT INTO books SELECT i, 1 + i % 3 FROM generate_series(1, 9) i;"
        )
    finally:
        await connection.close()
    yield url
    await drop_test_database(url)


@pytest.fixture
async def library(library_url: URL) -> AsyncIterator[Callable[..., Database]]:
    made: list[Database] = []

    def make(**settings: Any) -> Database:
        db = Database("library", DatabaseSettings(url=plain(library_url), **settings))
        made.append(db)
        return db

    yield make
    for db in made:
        await db.dispose()


async def test_a_lazy_load_raises_naming_the_attribute_and_the_fix(
    library: Callable[..., Database],
) -> None:
    db = library()  # LAZY_LOADS=raise is the default
    async with db.read_only_unit_of_work() as uow:
        author = (await uow.session.scalars(select(Author).where(Author.id == 1))).one()
        with pytest.raises(LazyLoadError) as caught:
            author.books  # noqa: B018
        assert caught.value.attribute == "Author.books"
        assert caught.value.option == "selectinload(Author.books)"
        assert "selectinload(Author.books)" in str(caught.value)
        # An awaited load is refused too: in a loop it is the N+1 pattern.
        with pytest.raises(LazyLoadError):
            await author.awaitable_attrs.books
        # A many-to-one suggests joinedload.
        book = (await uow.session.scalars(select(Book).where(Book.id == 1))).one()
        uow.session.expunge(author)
        with pytest.raises(LazyLoadError, match=r"joinedload\(Book\.author\)"):
            book.author  # noqa: B018


async def test_loaded_relationships_and_refresh_are_not_lazy_loads(
    library: Callable[..., Database],
) -> None:
    db = library()
    async with db.unit_of_work() as uow:
        authors = (
            await uow.session.scalars(select(Author).options(selectinload(Author.books)))
        ).all()
        assert sum(len(author.books) for author in authors) == 9
        # A many-to-one whose target is in the session runs no statement: allowed.
        book = authors[0].books[0]
        assert book.author is authors[0]
        lone = (await uow.session.scalars(select(Author).where(Author.id == 2))).one()
        await uow.session.refresh(lone, ["books"])
        assert len(lone.books) == 3


async def test_warn_logs_and_lets_an_awaited_load_go_on(
    library: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncdal.lazy_loads")
    db = library(lazy_loads="warn")
    async with db.read_only_unit_of_work() as uow:
        author = (await uow.session.scalars(select(Author).where(Author.id == 1))).one()
        books = await author.awaitable_attrs.books
        assert len(books) == 3
        # Unawaited it cannot run at all under asyncio: our error, not MissingGreenlet.
        other = (await uow.session.scalars(select(Author).where(Author.id == 2))).one()
        with pytest.raises(LazyLoadError, match=r"Author\.books"):
            other.books  # noqa: B018
    records = [r for r in caplog.records if r.name == "asyncdal.lazy_loads"]
    assert len(records) == 1
    assert "Author.books" in records[0].getMessage()
    assert "selectinload(Author.books)" in records[0].getMessage()


async def test_allow_leaves_sqlalchemy_alone(library: Callable[..., Database]) -> None:
    db = library(lazy_loads="allow")
    async with db.read_only_unit_of_work() as uow:
        author = (await uow.session.scalars(select(Author).where(Author.id == 1))).one()
        with pytest.raises(MissingGreenlet):
            author.books  # noqa: B018
        assert len(await author.awaitable_attrs.books) == 3


async def test_assert_max_queries_lists_the_statements_of_an_n_plus_1_loop(
    library: Callable[..., Database],
) -> None:
    db = library(lazy_loads="allow")
    async with db.read_only_unit_of_work() as uow:
        with pytest.raises(AssertionError) as caught, assert_max_queries(2):
            authors = (await uow.session.scalars(select(Author))).all()
            for author in authors:
                await author.awaitable_attrs.books
        message = str(caught.value)
        assert message.startswith("4 statements ran, more than 2:")
        assert message.count("FROM books") == 3
        with assert_max_queries(2) as log:
            (await uow.session.scalars(select(Author).options(selectinload(Author.books)))).all()
        assert len(log.statements) == 2


async def test_assert_max_queries_counts_only_its_target_and_its_context(
    library: Callable[..., Database], library_url: URL
) -> None:
    db, other = library(), library()
    plain_engine = create_async_engine(library_url)
    try:
        with assert_max_queries(1, db) as log:
            async with other.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))
                await uow.session.execute(text("SELECT 2"))
        assert log.statements == []  # another Database, although of the same name
        with assert_max_queries(5, "library") as log:
            async with other.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))
        assert log.statements == ["SELECT 1"]
        with assert_max_queries(1, plain_engine) as log:
            async with plain_engine.connect() as connection:
                await connection.execute(text("SELECT 3"))
            async with db.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT 4"))
        assert log.statements == ["SELECT 3"]
        with (
            pytest.raises(AssertionError, match="2 statements ran, more than 1"),
            assert_max_queries(1),
        ):
            async with db.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT 5"))
                await uow.session.execute(text("SELECT 6"))
    finally:
        await plain_engine.dispose()


async def test_a_database_pinned_to_one_connection_guards_lazy_loads_too(
    library: Callable[..., Database],
) -> None:
    # What the testing plugin's rollback_database does: the app's tests see what production does.
    db = library()
    async with db.engine.connect() as connection, db.use_connection(connection):
        async with db.unit_of_work() as uow:
            author = (await uow.session.scalars(select(Author).where(Author.id == 1))).one()
            with pytest.raises(LazyLoadError, match=r"selectinload\(Author\.books\)"):
                author.books  # noqa: B018
        async with db.read_only_unit_of_work() as uow:
            author = (await uow.session.scalars(select(Author).where(Author.id == 1))).one()
            with pytest.raises(LazyLoadError):
                await author.awaitable_attrs.books


async def test_the_loads_a_flush_runs_are_sqlalchemys_own_and_allowed(
    library: Callable[..., Database],
) -> None:
    db = library()
    async with db.unit_of_work() as uow:
        uow.session.add(Author(id=10, name="no books yet"))
        await uow.commit()
    async with db.unit_of_work() as uow:
        author = (await uow.session.scalars(select(Author).where(Author.id == 10))).one()
        # Deleting a parent loads its children (to update them) during the flush.
        await uow.session.delete(author)
        await uow.commit()
    async with db.read_only_unit_of_work() as uow:
        assert (await uow.session.scalars(select(Author).where(Author.id == 10))).first() is None


async def test_the_cascade_of_a_delete_loads_what_it_needs(library_url: URL) -> None:
    class CascadeBase(DeclarativeBase):
        pass

    class Shelf(CascadeBase):
        __tablename__ = "shelves"
        id: Mapped[int] = mapped_column(primary_key=True)
        slots: Mapped[list[Slot]] = relationship(cascade="all, delete-orphan")

    class Slot(CascadeBase):
        __tablename__ = "slots"
        id: Mapped[int] = mapped_column(primary_key=True)
        shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))

    db = Database("library", DatabaseSettings(url=plain(library_url)))
    try:
        async with db.engine.begin() as connection:
            await connection.run_sync(CascadeBase.metadata.create_all)
            await connection.execute(text("INSERT INTO shelves VALUES (1)"))
            await connection.execute(text("INSERT INTO slots VALUES (1, 1), (2, 1)"))
        async with db.unit_of_work() as uow:
            shelf = (await uow.session.scalars(select(Shelf))).one()
            await uow.session.delete(shelf)  # loads the slots, to delete them too
            await uow.commit()
        async with db.read_only_unit_of_work() as uow:
            assert (await uow.session.execute(text("SELECT count(*) FROM slots"))).scalar() == 0
    finally:
        async with db.engine.begin() as connection:
            await connection.run_sync(CascadeBase.metadata.drop_all)
        await db.dispose()
