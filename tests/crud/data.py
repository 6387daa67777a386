"""Rows the contract tests add, the same on both implementations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from tests.blog import Author, AuthorRepository, Post, PostRepository


@dataclass
class Blog:
    """The repositories a contract test works with, and which implementation they are."""

    kind: str
    authors: AuthorRepository
    posts: PostRepository


async def an_author(blog: Blog, email: str = "ada@example.com", **values: object) -> Author:
    """Add an author (name from the email unless given)."""
    values.setdefault("name", email.split("@")[0])
    return await blog.authors.add(Author(email=email, **values))


async def some_posts(blog: Blog) -> dict[str, Post]:
    """Five posts with NULLs in slug, rating and published_on, by title."""
    author = await an_author(blog)
    rows = [
        ("alpha", "a", Decimal("4.5"), date(2026, 1, 3)),
        ("beta", None, Decimal("2.0"), None),
        ("gamma", "g", None, date(2026, 1, 1)),
        ("delta", "d", Decimal("4.5"), date(2026, 1, 2)),
        ("100% off_sale", None, None, None),
    ]
    added = await blog.posts.add_many(
        Post(author_id=author.id, title=title, slug=slug, rating=rating, published_on=day)
        for title, slug, rating, day in rows
    )
    return {post.title: post for post in added}


def titles(posts: list[Post]) -> list[str]:
    """The titles, in order."""
    return [post.title for post in posts]
