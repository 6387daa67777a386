"""Contract: keys, defaults, constraints, versions and custom methods, on PostgreSQL and in
memory alike."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from asyncdal import (
    ConstraintViolationError,
    InvalidQueryError,
    InvalidValueError,
    NotFoundError,
    StaleVersionError,
    UniqueViolationError,
)
from tests.blog import Author, Post
from tests.crud.data import Blog, an_author, some_posts


async def test_add_fills_in_the_key_and_the_defaults(blog: Blog) -> None:
    first = await an_author(blog, "ada@example.com")
    second = await an_author(blog, "bob@example.com", karma=7)
    assert isinstance(first.id, int)
    assert second.id > first.id
    assert (first.karma, second.karma) == (0, 7)  # Python-side default, unless given
    assert abs(first.created_at - datetime.now(UTC)) < timedelta(minutes=5)  # server default
    post = await blog.posts.add(Post(author_id=first.id, title="t"))
    assert post.status == "draft"
    assert isinstance(post.token, uuid.UUID)
    assert post.version == 1
    assert post.updated_at.tzinfo is not None


async def test_get_get_one_get_many_update_delete(blog: Blog) -> None:
    ada, bob = await an_author(blog, "ada@x.org"), await an_author(blog, "bob@x.org")
    assert await blog.authors.get(ada.id) is ada
    assert await blog.authors.get_one(bob.id) is bob
    missing = ada.id + bob.id + 1000
    assert await blog.authors.get(missing) is None
    with pytest.raises(NotFoundError, match="Author") as caught:
        await blog.authors.get_one(missing)
    assert (caught.value.model, caught.value.ident) == ("Author", missing)
    assert [a.email for a in await blog.authors.get_many([bob.id, missing, ada.id])] == [
        "bob@x.org",
        "ada@x.org",
    ]
    assert await blog.authors.get_many([]) == []
    updated = await blog.authors.update(ada.id, name="Ada L.", nickname="al")
    assert updated is ada
    assert (ada.name, ada.nickname) == ("Ada L.", "al")
    assert await blog.authors.update(missing, name="x") is None
    with pytest.raises(InvalidQueryError, match="colour"):
        await blog.authors.update(ada.id, colour="red")
    assert await blog.authors.delete(bob) is True
    assert await blog.authors.delete(bob.id) is False
    assert await blog.authors.count() == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("abc", "id: expected int, got str"),
        ("1", "id: expected int, got str"),
        (True, "id: expected int, got bool"),
        (2**63, "id: 9223372036854775808 is out of range"),
        ((1, 2), "expected a key of 1 value"),
    ],
)
async def test_a_key_its_column_cannot_take_is_refused_naming_the_column(
    blog: Blog, key: object, message: str
) -> None:
    # On PostgreSQL get_many(["abc"]) was an untranslated ProgrammingError (bigint = varchar)
    # and get("abc") a data error naming nothing; in memory, both found nothing.
    await some_posts(blog)
    posts = blog.posts
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: posts.get(key),
        lambda: posts.get(key, load=["author"]),
        lambda: posts.get_one(key),
        lambda: posts.get_many([key]),
        lambda: posts.update(key, title="x"),
        lambda: posts.delete(key),
    ]
    for call in calls:
        with pytest.raises(InvalidQueryError, match=re.escape(message)):
            await call()


@pytest.mark.parametrize(
    "values",
    [
        {"rating": "abc"},
        {"published_on": "2026-01-01"},
        {"author_id": "1"},
        {"title": "a\ud800b"},  # a lone surrogate: not UTF-8, so not text to PostgreSQL
        {"title": "a\x00b"},
    ],
)
@pytest.mark.parametrize("write", ["add", "update"])
async def test_a_value_its_column_cannot_hold_is_refused_on_add_and_update(
    blog: Blog, values: dict[str, object], write: str
) -> None:
    # The in-memory fake took them all, where PostgreSQL refuses them: a test green in
    # memory would fail in production.
    ada = await an_author(blog, "ada@x.org")
    if write == "add":
        with pytest.raises(InvalidValueError):
            await blog.posts.add(Post(**{"author_id": ada.id, "title": "t", **values}))
    else:
        post = await blog.posts.add(Post(author_id=ada.id, title="u", slug="u"))
        with pytest.raises(InvalidValueError):
            await blog.posts.update(post, **values)


async def test_a_number_written_as_text_is_taken_for_a_numeric_column(blog: Blog) -> None:
    # asyncpg takes text for NUMERIC (Decimal(text)); so does the fake.
    ada = await an_author(blog, "ada@x.org")
    post = await blog.posts.add(Post(author_id=ada.id, title="t", rating="4.5"))
    assert await blog.posts.count(filters={"rating": Decimal("4.5")}) == 1
    await blog.posts.update(post, rating="2")
    assert await blog.posts.count(filters={"rating__lt": 3}) == 1


async def test_a_custom_method_written_with_public_methods_runs(blog: Blog) -> None:
    await an_author(blog, "ada@example.com")
    found = await blog.authors.by_email("ada@example.com")
    assert found is not None
    assert found.email == "ada@example.com"
    assert await blog.authors.by_email("nobody@example.com") is None


async def test_a_duplicate_key_is_a_unique_violation_naming_the_constraint(blog: Blog) -> None:
    await an_author(blog, "ada@example.com")
    with pytest.raises(UniqueViolationError) as caught:
        await an_author(blog, "ada@example.com", name="other")
    assert caught.value.constraint == "uq_authors_email"
    assert caught.value.table == "authors"


async def test_null_never_conflicts_in_a_unique_column(blog: Blog) -> None:
    author = await an_author(blog)
    await blog.posts.add_many(
        [Post(author_id=author.id, title="a"), Post(author_id=author.id, title="b")]
    )
    assert await blog.posts.count(filters={"slug__isnull": True}) == 2


async def test_a_null_in_a_not_null_column_is_a_constraint_violation(blog: Blog) -> None:
    with pytest.raises(ConstraintViolationError) as caught:
        await blog.authors.add(Author(email="ada@example.com"))  # no name
    assert caught.value.sqlstate == "23502"
    assert caught.value.columns == ("name",)


async def test_updates_bump_the_version_and_expected_versions_are_checked(blog: Blog) -> None:
    posts = await some_posts(blog)
    post = posts["alpha"]
    assert post.version == 1
    await blog.posts.update(post, title="alpha 2")
    assert post.version == 2
    await blog.posts.update(post, title="alpha 2")  # no change: no UPDATE, no new version
    assert post.version == 2
    await blog.posts.update(post.id, expected_version=2, title="alpha 3")
    assert (post.title, post.version) == ("alpha 3", 3)
    with pytest.raises(StaleVersionError) as caught:
        await blog.posts.update(post.id, expected_version=2, title="late")
    assert (caught.value.expected, caught.value.actual) == (2, 3)
    assert post.title == "alpha 3"
    with pytest.raises(StaleVersionError):
        await blog.posts.delete(post.id, expected_version=1)
    assert await blog.posts.delete(post.id, expected_version=3) is True


async def test_expected_version_needs_a_version_column(blog: Blog) -> None:
    author = await an_author(blog)
    with pytest.raises(TypeError, match="version column"):
        await blog.authors.update(author, expected_version=1, name="x")


async def test_update_sets_onupdate_columns(blog: Blog) -> None:
    posts = await some_posts(blog)
    post = posts["beta"]
    before = post.updated_at
    await blog.posts.update(post, rating=None, published_on=None, title="beta 2")
    assert post.updated_at >= before
    assert post.rating is None


@pytest.mark.parametrize("load", [["colour"], ["author.nothing"], ["posts"]])
async def test_load_names_must_be_relationships(blog: Blog, load: list[str]) -> None:
    posts = await some_posts(blog)
    with pytest.raises(InvalidQueryError, match="relationship"):
        await blog.posts.list(load=load)
    with pytest.raises(InvalidQueryError, match="relationship"):
        await blog.posts.get(posts["alpha"].id, load=load)


async def test_load_takes_relationship_paths(blog: Blog) -> None:
    posts = await some_posts(blog)
    loaded = await blog.posts.list(load=["author", "author.posts"], limit=2)
    assert len(loaded) == 2
    assert await blog.posts.get_one(posts["alpha"].id, load=["author"]) is posts["alpha"]
