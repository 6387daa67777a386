"""What only PostgreSQL shows: round trips, eager loading, row comparisons, and version
conflicts between two transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import joinedload

from asyncdal import Database, StaleVersionError
from tests.blog import Author, AuthorRepository, Post, PostRepository


@pytest.fixture
async def statements(blog_database: Database) -> AsyncIterator[list[str]]:
    """The SQL statements sent while the test runs."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = blog_database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
async def committed(blog_database: Database) -> AsyncIterator[Database]:
    """The blog database for tests that commit; emptied afterwards."""
    yield blog_database
    async with blog_database.engine.begin() as connection:
        await connection.execute(text("TRUNCATE posts, authors RESTART IDENTITY CASCADE"))


async def seed(database: Database) -> tuple[int, int]:
    async with database.unit_of_work() as uow:
        author = await uow.repository(AuthorRepository).add(Author(email="a@x", name="A"))
        post = await uow.repository(PostRepository).add(Post(author_id=author.id, title="t"))
        await uow.commit()
        return author.id, post.id


async def test_list_and_count_and_page_take_one_statement(
    committed: Database, statements: list[str]
) -> None:
    await seed(committed)
    async with committed.read_only_unit_of_work() as uow:
        posts = uow.repository(PostRepository)
        statements.clear()
        assert len((await posts.list_and_count(limit=5))[0]) == 1
        assert len(statements) == 1
        statements.clear()
        page = await posts.page(order_by="-rating", limit=5)
        assert (len(page.items), page.total) == (1, 1)
        assert len(statements) == 1
        assert "count(*)" in statements[0]


async def test_a_keyset_over_not_null_columns_is_a_row_comparison(
    committed: Database, statements: list[str]
) -> None:
    author_id, _ = await seed(committed)
    async with committed.unit_of_work() as uow:
        await uow.repository(PostRepository).add(Post(author_id=author_id, title="u"))
        await uow.commit()
    async with committed.read_only_unit_of_work() as uow:
        posts = uow.repository(PostRepository)
        first = await posts.page(order_by="title", limit=1, count=False)
        assert first.next_cursor is not None
        statements.clear()
        second = await posts.page(order_by="title", cursor=first.next_cursor, count=False)
        assert [post.title for post in second.items] == ["u"]
        assert "(posts.title, posts.id) > (" in statements[0]


async def test_load_fills_in_relationships_that_refuse_lazy_loads(committed: Database) -> None:
    author_id, post_id = await seed(committed)
    async with committed.read_only_unit_of_work() as uow:
        posts = uow.repository(PostRepository)
        plain = await posts.get(post_id)
        assert plain is not None
        with pytest.raises(InvalidRequestError):
            _ = plain.author  # lazy="raise"
        # The same object, already in the session, gets its relationship loaded.
        loaded = await posts.get_one(post_id, load=["author.posts"])
        assert loaded is plain
        assert loaded.author.id == author_id
        assert [p.id for p in loaded.author.posts] == [post_id]
        (listed,) = await posts.list(load=[joinedload(Post.author)])
        assert listed.author.email == "a@x"
        page = await posts.page(load=["author"])
        assert page.items[0].author.name == "A"
        authors = await uow.repository(AuthorRepository).get_many([author_id], load=["posts"])
        assert len(authors[0].posts) == 1


async def test_a_concurrent_update_is_a_stale_version(committed: Database) -> None:
    _, post_id = await seed(committed)
    async with committed.unit_of_work() as first, committed.background_unit_of_work() as second:
        mine = await first.repository(PostRepository).get_one(post_id)
        theirs = await second.repository(PostRepository).get_one(post_id)
        await second.repository(PostRepository).update(theirs, title="theirs")
        await second.commit()
        with pytest.raises(StaleVersionError):
            await first.repository(PostRepository).update(mine, title="mine")
    async with committed.read_only_unit_of_work() as uow:
        stored = await uow.repository(PostRepository).get_one(post_id)
        assert (stored.title, stored.version) == ("theirs", 2)


async def test_a_stale_version_found_at_commit_is_a_stale_version(committed: Database) -> None:
    _, post_id = await seed(committed)
    async with committed.unit_of_work() as first, committed.background_unit_of_work() as second:
        mine = await first.repository(PostRepository).get_one(post_id)
        await second.repository(PostRepository).delete(post_id)
        await second.commit()
        mine.title = "edited in place"  # flushed by commit(), not by the repository
        with pytest.raises(StaleVersionError):
            await first.commit()


async def test_upsert_refreshes_the_object_in_the_session(committed: Database) -> None:
    author_id, _ = await seed(committed)
    async with committed.unit_of_work() as uow:
        authors = uow.repository(AuthorRepository)
        loaded = await authors.get_one(author_id)
        stored = await authors.upsert({"email": "a@x", "name": "B"}, constraint="uq_authors_email")
        assert stored is loaded
        assert loaded.name == "B"
