"""Contract: upsert and upsert_many on a named unique constraint."""

from __future__ import annotations

from decimal import Decimal

import pytest

from asyncdal import InvalidQueryError
from tests.crud.data import Blog, an_author


async def test_upsert_inserts_then_updates_the_same_row(blog: Blog) -> None:
    ada = await blog.authors.upsert(
        {"email": "ada@example.com", "name": "Ada"}, constraint="uq_authors_email"
    )
    assert (ada.name, ada.karma) == ("Ada", 0)  # Python-side default applied on insert
    assert ada.id is not None
    assert ada.created_at is not None
    again = await blog.authors.upsert(
        {"email": "ada@example.com", "name": "Ada L.", "karma": 3}, constraint="uq_authors_email"
    )
    assert again.id == ada.id
    assert (again.name, again.karma) == ("Ada L.", 3)
    assert await blog.authors.count() == 1
    stored = await blog.authors.get(ada.id)
    assert stored is not None
    assert stored.name == "Ada L."


async def test_upsert_updates_only_the_columns_named(blog: Blog) -> None:
    await an_author(blog, "ada@example.com", name="Ada", karma=5)
    kept = await blog.authors.upsert(
        {"email": "ada@example.com", "name": "New", "karma": 9},
        constraint="uq_authors_email",
        update=["karma"],
    )
    assert (kept.name, kept.karma) == ("Ada", 9)
    untouched = await blog.authors.upsert(
        {"email": "ada@example.com", "name": "Other"}, constraint="uq_authors_email", update=()
    )
    assert (untouched.name, untouched.karma) == ("Ada", 9)


async def test_upsert_bumps_the_version_when_it_updates(blog: Blog) -> None:
    author = await an_author(blog)
    values = {"author_id": author.id, "slug": "hello", "title": "Hello"}
    post = await blog.posts.upsert(values, constraint="uq_posts_slug")
    assert (post.version, post.status) == (1, "draft")
    first_update = post.updated_at
    post = await blog.posts.upsert({**values, "title": "Hello!"}, constraint="uq_posts_slug")
    assert (post.title, post.version) == ("Hello!", 2)
    assert post.updated_at >= first_update
    same = await blog.posts.upsert(values, constraint="uq_posts_slug", update=())
    assert (same.title, same.version) == ("Hello!", 2)


async def test_upsert_many_keeps_the_order_of_the_rows(blog: Blog) -> None:
    await an_author(blog, "b@example.com", name="B", karma=1)
    stored = await blog.authors.upsert_many(
        [
            {"email": "c@example.com", "name": "C", "karma": 3},
            {"email": "b@example.com", "name": "B2", "karma": 2},
            {"email": "a@example.com", "name": "A", "karma": 1},
        ],
        constraint="uq_authors_email",
    )
    assert [(a.email, a.name) for a in stored] == [
        ("c@example.com", "C"),
        ("b@example.com", "B2"),
        ("a@example.com", "A"),
    ]
    assert await blog.authors.count() == 3
    assert await blog.authors.upsert_many([], constraint="uq_authors_email") == []


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"email": "a@x", "name": "A"}, {"email": "a@x", "name": "B"}], "same email"),
        ([{"name": "A"}], "needs a value for email"),
        ([{"email": None, "name": "A"}], "NULL never conflicts"),
        ([{"email": "a@x", "name": "A", "colour": "red"}], "unknown columns"),
        ([{"email": "a@x", "name": "A"}, {"email": "b@x"}], "same columns"),
    ],
)
async def test_upsert_input_refused_alike(
    blog: Blog, rows: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        await blog.authors.upsert_many(rows, constraint="uq_authors_email")


async def test_upsert_refuses_the_version_column(blog: Blog) -> None:
    with pytest.raises(InvalidQueryError, match="version"):
        await blog.posts.upsert(
            {"author_id": 1, "slug": "s", "title": "t", "version": 7}, constraint="uq_posts_slug"
        )


async def test_upsert_needs_a_unique_constraint_by_name(blog: Blog) -> None:
    with pytest.raises(ValueError, match="uq_authors_email"):
        await blog.authors.upsert({"email": "a@x", "name": "A"}, constraint="authors_email_key")
    with pytest.raises(ValueError, match="unknown columns"):
        await blog.authors.upsert(
            {"email": "a@x", "name": "A"}, constraint="uq_authors_email", update=["colour"]
        )


async def test_upsert_by_primary_key(blog: Blog) -> None:
    author = await an_author(blog)
    post = await blog.posts.upsert(
        {"id": 10**6, "author_id": author.id, "title": "by id", "rating": Decimal("1.5")},
        constraint="posts_pkey",
    )
    again = await blog.posts.upsert(
        {"id": 10**6, "author_id": author.id, "title": "by id 2", "rating": Decimal("1.5")},
        constraint="posts_pkey",
    )
    assert (again.id, again.title, again.version) == (post.id, "by id 2", 2)
