"""Contract: orders with NULLs, counts, offset pages and keyset cursors."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from sqlalchemy import inspect as sa_inspect

from asyncdal import InvalidQueryError, ListQuery, Page
from tests.blog import Post
from tests.crud.data import Blog, an_author, some_posts, titles


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, ["alpha", "beta", "gamma", "delta", "100% off_sale"]),  # primary key
        ("title", ["100% off_sale", "alpha", "beta", "delta", "gamma"]),
        ("-title", ["gamma", "delta", "beta", "alpha", "100% off_sale"]),
        # NULLs last ascending, first descending; the primary key breaks ties.
        ("slug", ["alpha", "delta", "gamma", "beta", "100% off_sale"]),
        ("-slug", ["beta", "100% off_sale", "gamma", "delta", "alpha"]),
        (["-rating", "title"], ["100% off_sale", "gamma", "alpha", "delta", "beta"]),
        (["rating", "-published_on"], ["beta", "alpha", "delta", "100% off_sale", "gamma"]),
        ("published_on", ["gamma", "delta", "alpha", "beta", "100% off_sale"]),
        (["-id"], ["100% off_sale", "delta", "gamma", "beta", "alpha"]),
    ],
)
async def test_orders(blog: Blog, order_by: str | list[str] | None, expected: list[str]) -> None:
    await some_posts(blog)
    assert titles(await blog.posts.list(order_by=order_by)) == expected


@pytest.mark.parametrize(
    "call",
    [
        {"order_by": "title; drop table posts"},
        {"order_by": "version"},
        {"order_by": ["title", "-title"]},
        {"limit": 0},
        {"limit": 51},
        {"offset": -1},
    ],
)
async def test_orders_and_pages_refused_alike(blog: Blog, call: dict[str, object]) -> None:
    with pytest.raises(InvalidQueryError):
        await blog.posts.list(**call)  # type: ignore[arg-type]


async def test_rows_are_the_instances_column_values(blog: Blog) -> None:
    await some_posts(blog)
    columns = [prop.key for prop in sa_inspect(Post).column_attrs]

    def values(posts: list[Post]) -> list[dict[str, object]]:
        return [{key: getattr(post, key) for key in columns} for post in posts]

    instances = await blog.posts.list(order_by="-rating", limit=3, offset=1)
    assert await blog.posts.list(order_by="-rating", limit=3, offset=1, rows=True) == values(
        instances
    )
    filtered, total = await blog.posts.list_and_count(filters={"rating__gt": 3}, rows=True)
    assert (sorted(row["title"] for row in filtered), total) == (["alpha", "delta"], 2)
    assert await blog.posts.list_and_count(offset=10, rows=True) == ([], 5)
    with pytest.raises(TypeError, match="no relationships"):
        await blog.posts.list(rows=True, load=["author"])  # type: ignore[call-overload]


async def test_list_and_count(blog: Blog) -> None:
    await some_posts(blog)
    items, total = await blog.posts.list_and_count(order_by="title", limit=2, offset=1)
    assert (titles(items), total) == (["alpha", "beta"], 5)
    items, total = await blog.posts.list_and_count(filters={"rating__gt": 3})
    assert (sorted(titles(items)), total) == (["alpha", "delta"], 2)
    # Past the end: no row carries the count, and it is still right.
    assert await blog.posts.list_and_count(offset=10) == ([], 5)
    assert await blog.posts.list_and_count(filters={"slug": "zzz"}) == ([], 0)


async def test_offset_pages(blog: Blog) -> None:
    await some_posts(blog)
    first = await blog.posts.page(order_by="title", limit=2)
    assert isinstance(first, Page)
    assert (titles(first.items), first.total, first.limit, first.offset) == (
        ["100% off_sale", "alpha"],
        5,
        2,
        0,
    )
    assert first.next_cursor is not None
    last = await blog.posts.page(ListQuery(order_by=("title",), limit=2, offset=4))
    assert (titles(last.items), last.total, last.next_cursor) == (["gamma"], 5, None)
    uncounted = await blog.posts.page(limit=3, count=False)
    assert (uncounted.total, len(uncounted.items)) == (None, 3)
    assert (await blog.posts.page()).limit == 10  # default_page_size


async def walk(blog: Blog, query: ListQuery) -> list[str]:
    """Every title, page by page, following next_cursor."""
    seen: list[str] = []
    page = await blog.posts.page(query)
    while True:
        seen += titles(page.items)
        assert page.total == 5
        if page.next_cursor is None:
            return seen
        page = await blog.posts.page(query, cursor=page.next_cursor)
        assert page.offset is None


@pytest.mark.parametrize(
    "order_by",
    [
        (),
        ("title",),
        ("-title",),
        ("slug",),
        ("-slug",),
        ("-rating", "title"),
        ("rating", "-published_on"),
        ("published_on",),
        ("-published_on", "-slug"),
        ("-updated_at",),
    ],
)
@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_cursor_pages_walk_the_same_order_with_nulls(
    blog: Blog, order_by: tuple[str, ...], limit: int
) -> None:
    await some_posts(blog)
    everything = titles(await blog.posts.list(order_by=order_by))
    assert await walk(blog, ListQuery(order_by=order_by, limit=limit)) == everything


async def test_a_cursor_page_starts_after_the_last_row_even_when_rows_change(blog: Blog) -> None:
    posts = await some_posts(blog)
    first = await blog.posts.page(order_by="title", limit=2)
    assert titles(first.items) == ["100% off_sale", "alpha"]
    await blog.posts.delete(posts["100% off_sale"])
    await blog.posts.add(Post(author_id=posts["alpha"].author_id, title="0 first"))
    following = await blog.posts.page(order_by="title", limit=2, cursor=first.next_cursor)
    assert titles(following.items) == ["beta", "delta"]
    assert following.total == 5


async def test_a_cursor_with_filters_counts_all_matching(blog: Blog) -> None:
    await some_posts(blog)
    query = ListQuery(filters={"rating__isnull": False}, order_by=("rating",), limit=2)
    first = await blog.posts.page(query)
    assert (titles(first.items), first.total) == (["beta", "alpha"], 3)
    second = await blog.posts.page(query, cursor=first.next_cursor)
    assert (titles(second.items), second.total, second.next_cursor) == (["delta"], 3, None)


def tampered(cursor: str, change: dict[str, object]) -> str:
    padded = cursor + "=" * (-len(cursor) % 4)
    payload = {**json.loads(base64.urlsafe_b64decode(padded)), **change}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def test_cursors_are_checked(blog: Blog) -> None:
    posts = await some_posts(blog)
    first = await blog.posts.page(order_by="-rating", limit=2)
    cursor = first.next_cursor
    assert cursor is not None
    refused = {
        "garbage": "not a cursor",
        "empty": "",
        "not json": base64.urlsafe_b64encode(b"{nope").decode(),
        "a list": base64.urlsafe_b64encode(b"[1, 2]").decode(),
        "extra key": tampered(cursor, {"x": 1}),
        "other order": tampered(cursor, {"k": ["title", "id"]}),
        "other filters": tampered(cursor, {"f": "0" * 16}),
        "too few values": tampered(cursor, {"v": [1]}),
        "a number for a decimal": tampered(cursor, {"v": [4.5, 1]}),
        "a bad decimal": tampered(cursor, {"v": ["four", 1]}),
        "an infinite decimal": tampered(cursor, {"v": ["Infinity", 1]}),
        "too many digits": tampered(cursor, {"v": ["12345.6", 1]}),
        "a string for an id": tampered(cursor, {"v": ["4.5", "1"]}),
        "a boolean for an id": tampered(cursor, {"v": ["4.5", True]}),
        "a null id": tampered(cursor, {"v": ["4.5", None]}),
        "an id past bigint": tampered(cursor, {"v": ["4.5", 2**63]}),
        "too long": "A" * 5000,
    }
    for why, bad in refused.items():
        with pytest.raises(InvalidQueryError, match="cursor"):
            await blog.posts.page(order_by="-rating", limit=2, cursor=bad)
            pytest.fail(why)
    with pytest.raises(InvalidQueryError, match="another sort order"):
        await blog.posts.page(order_by="rating", cursor=cursor)
    with pytest.raises(InvalidQueryError, match="other filters"):
        await blog.posts.page(order_by="-rating", filters={"status": "draft"}, cursor=cursor)
    with pytest.raises(InvalidQueryError, match="offset or cursor"):
        await blog.posts.page(order_by="-rating", offset=2, cursor=cursor)
    # A cursor edited to another valid position is a position like any other.
    moved = tampered(cursor, {"v": ["4.5", posts["alpha"].id]})
    after_alpha = await blog.posts.page(order_by="-rating", cursor=moved)
    assert titles(after_alpha.items) == ["delta", "beta"]


async def test_the_query_and_the_arguments_combine(blog: Blog) -> None:
    await some_posts(blog)
    author = await an_author(blog, "me@example.com")
    await blog.posts.add(Post(author_id=author.id, title="mine", rating=Decimal(5)))
    query = ListQuery(filters={"rating__gte": 4, "author_id": -1}, order_by=("title",))
    page = await blog.posts.page(query, filters={"author_id": author.id}, limit=1)
    assert (titles(page.items), page.total) == (["mine"], 1)
