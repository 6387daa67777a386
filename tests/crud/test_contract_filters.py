"""Contract: every filter operator, with SQL's NULL semantics, and the same refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from asyncdal import InvalidQueryError
from tests.crud.data import Blog, some_posts, titles

ALL = ["alpha", "beta", "gamma", "delta", "100% off_sale"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"slug": "a"}, ["alpha"]),
        ({"slug__eq": "a"}, ["alpha"]),
        # SQL: <> is not true for NULL, so the NULL slugs are left out.
        ({"slug__ne": "a"}, ["gamma", "delta"]),
        ({"slug": None}, ["beta", "100% off_sale"]),
        ({"slug__ne": None}, ["alpha", "gamma", "delta"]),
        ({"slug__isnull": True}, ["beta", "100% off_sale"]),
        ({"slug__isnull": False}, ["alpha", "gamma", "delta"]),
        ({"slug__gt": "b"}, ["gamma", "delta"]),
        ({"slug__lte": "d"}, ["alpha", "delta"]),
        ({"rating__lt": Decimal("4.5")}, ["beta"]),
        ({"rating__gte": 4}, ["alpha", "delta"]),
        ({"rating__gte": 4.5}, ["alpha", "delta"]),
        ({"rating": Decimal("4.50")}, ["alpha", "delta"]),
        ({"rating__ne": Decimal("4.5")}, ["beta"]),
        ({"published_on__gt": date(2026, 1, 1)}, ["alpha", "delta"]),
        ({"published_on__isnull": True}, ["beta", "100% off_sale"]),
        ({"slug__in": ["a", "g", "zzz"]}, ["alpha", "gamma"]),
        ({"slug__in": []}, []),
        ({"title__in": ("beta",)}, ["beta"]),
        ({"title__contains": "lt"}, ["delta"]),
        ({"title__contains": "A"}, []),
        ({"title__icontains": "A"}, ALL),
        ({"title__icontains": "ELT"}, ["delta"]),
        ({"title__startswith": "al"}, ["alpha"]),
        ({"title__istartswith": "AL"}, ["alpha"]),
        ({"title__endswith": "ta"}, ["beta", "delta"]),
        ({"title__iendswith": "TA"}, ["beta", "delta"]),
        # % and _ match themselves, not any string or any character.
        ({"title__contains": "%"}, ["100% off_sale"]),
        ({"title__contains": "_"}, ["100% off_sale"]),
        ({"title__contains": "0% o"}, ["100% off_sale"]),
        ({"title__contains": "l_h"}, []),
        ({"title__startswith": "%"}, []),
        ({"title__icontains": "F_S"}, ["100% off_sale"]),
        ({"title__contains": "/"}, []),
        ({"title__contains": ""}, ALL),
        ({"status": "draft", "rating__gt": 3, "slug__ne": "d"}, ["alpha"]),
    ],
)
async def test_filters(blog: Blog, filters: dict[str, Any], expected: list[str]) -> None:
    await some_posts(blog)
    found = await blog.posts.list(filters=filters)
    assert sorted(titles(found)) == sorted(expected)
    assert await blog.posts.count(filters=filters) == len(expected)


async def test_the_escape_character_itself_is_matched_literally(blog: Blog) -> None:
    posts = await some_posts(blog)
    await blog.posts.update(posts["beta"], title="a/b\\c")
    assert titles(await blog.posts.list(filters={"title__contains": "/b\\"})) == ["a/b\\c"]
    assert titles(await blog.posts.list(filters={"title__endswith": "\\c"})) == ["a/b\\c"]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"slug__like": "a"}, "unknown filter operator"),
        ({"version": 1}, "cannot filter by 'version'"),
        ({"rating__contains": "4"}, "does not apply"),
        ({"rating__lt": None}, "__isnull"),
        ({"slug__in": ["a", None]}, "__isnull"),
        ({"title__contains": None}, "__isnull"),
        ({"slug__isnull": "yes"}, "true or false"),
        ({"slug__in": "abc"}, "list"),
        ({"rating__lt": "4"}, "expected Decimal, got str"),
        ({"rating__lt": True}, "expected Decimal, got bool"),
        ({"author_id": "1"}, "expected int, got str"),
        ({"published_on__lt": datetime(2026, 1, 1, tzinfo=UTC)}, "expected date"),
        ({"rating__lt": Decimal("1e10")}, "digit"),
        ({"author_id__gt": 2**63}, "out of range"),
        ({"title": "a\x00b"}, "NUL"),
        # Text PostgreSQL cannot take: it was a data error naming no filter (or, in memory,
        # no error at all).
        ({"rating__gt": "abc"}, "expected Decimal, got str"),
        ({"rating__in": ["4.5", "abc"]}, "expected Decimal, got str"),
        ({"title": "a\ud800b"}, "lone surrogate"),
        ({"title__icontains": "\udfff"}, "lone surrogate"),
        ({"slug__in": ["a", "\ud800"]}, "lone surrogate"),
    ],
)
async def test_filters_refused_alike(blog: Blog, filters: dict[str, Any], message: str) -> None:
    key = next(iter(filters))
    with pytest.raises(InvalidQueryError, match=message) as caught:
        await blog.posts.list(filters=filters)
    assert key.split("__")[0] in str(caught.value)
    with pytest.raises(InvalidQueryError, match=message):
        await blog.posts.count(filters=filters)


async def test_a_timestamp_filter_needs_a_time_zone_when_the_column_has_one(blog: Blog) -> None:
    await some_posts(blog)
    with pytest.raises(InvalidQueryError, match="with time zone"):
        await blog.authors.list(filters={"created_at__lt": datetime(2026, 1, 1)})


async def test_a_uuid_may_come_as_text_and_in_takes_any_iterable(blog: Blog) -> None:
    posts = await some_posts(blog)
    token = posts["alpha"].token
    assert titles(await blog.posts.list(filters={"token": str(token)})) == ["alpha"]
    assert titles(await blog.posts.list(filters={"token__in": [token]})) == ["alpha"]
    with pytest.raises(InvalidQueryError, match="token: not a UUID"):
        await blog.posts.list(filters={"token": "nope"})
    chosen = await blog.posts.list(filters={"slug__in": (slug for slug in ["a", "d"])})
    assert sorted(titles(chosen)) == ["alpha", "delta"]
