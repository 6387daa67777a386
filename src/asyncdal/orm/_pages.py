"""``Page[Model]`` and ``ListQuery``: what a list endpoint returns, and what it was asked.

Example:
    >>> page = await posts.page(ListQuery(filters={"title__icontains": "sql"}, limit=20))
    >>> page.items, page.total, page.next_cursor
    ([<Post 7>, ...], 31, 'eyJrIjpbImlkIl0s...')
    >>> following = await posts.page(ListQuery(limit=20, cursor=page.next_cursor))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from asyncdal.errors import InvalidQueryError
from asyncdal.orm._cursors import decode_cursor, filters_digest
from asyncdal.orm._filters import Condition, parse_filters
from asyncdal.orm._ordering import SortKey, parse_order
from asyncdal.orm._values import MAX_BIGINT

__all__ = ["ListQuery", "Page", "PageRequest", "check_page", "plan_page"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, and how to get the next.

    A FastAPI endpoint can return it as ``Page[PostRead]`` (``PostRead`` a pydantic model with
    ``from_attributes=True``): the ORM objects in ``items`` are read into ``PostRead``.

    Attributes:
        items: the objects of this page (real ORM instances).
        total: how many objects match the filters on all pages; None when not counted
            (``page(..., count=False)``).
        limit: the page size used.
        offset: the offset of this page, when it was asked for by offset; None when it was
            asked for by cursor.
        next_cursor: the cursor of the page after this one (an opaque string: pass it back as
            ``cursor``), or None when this is the last page.

    Example:
        >>> @app.get("/posts")
        ... async def list_posts(query: PostQuery, posts: Posts) -> Page[PostRead]:
        ...     return await posts.page(query)
    """

    items: list[T]
    total: int | None
    limit: int
    offset: int | None = None
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a client asked a list for: filters, order and page, not yet checked.

    ``Repository.page(query)`` checks it against the repository's whitelists;
    ``asyncdal.fastapi.list_query`` builds one from a query string.

    Attributes:
        filters: ``{"column__operator": value}`` (see ``Repository.list``).
        order_by: ``"column"`` or ``"-column"`` fields.
        limit: the page size (None: the repository's default).
        offset: rows to skip (None: 0, or the position in ``cursor``).
        cursor: a ``Page.next_cursor`` to continue from; not with ``offset``.

    Example:
        >>> ListQuery(filters={"price__lt": Decimal(10)}, order_by=("-price",), limit=20)
    """

    filters: Mapping[str, Any] = field(default_factory=dict)
    order_by: tuple[str, ...] = ()
    limit: int | None = None
    offset: int | None = None
    cursor: str | None = None


def check_page(limit: int | None, offset: int, *, default: int, maximum: int) -> int:
    """The page size to use for ``limit``; shared by the in-memory fake.

    Raises:
        InvalidQueryError: ``limit`` outside 1..``maximum``, or ``offset`` negative or past
            what PostgreSQL takes (a BIGINT).
    """
    page = default if limit is None else limit
    if not 1 <= page <= maximum:
        raise InvalidQueryError(f"limit must be between 1 and {maximum}")
    if not 0 <= offset <= MAX_BIGINT:
        raise InvalidQueryError(f"offset must be between 0 and {MAX_BIGINT}")
    return page


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A list request checked against a repository: what both the SQL repository and the
    in-memory fake run.

    Attributes:
        conditions: the checked filters.
        keys: the whole order (primary key last).
        limit: the page size.
        offset: rows to skip (0 with a cursor).
        position: the cursor's values, one per key; None without a cursor.
        digest: the filters' digest that cursors carry.
    """

    conditions: list[Condition]
    keys: tuple[SortKey, ...]
    limit: int
    offset: int
    position: list[Any] | None
    digest: str


def plan_page(
    repository: Any,
    *,
    query: ListQuery | None = None,
    filters: Mapping[str, Any] | None = None,
    order_by: str | Sequence[str] | None = None,
    limit: int | None = None,
    offset: int | None = None,
    cursor: str | None = None,
) -> PageRequest:
    """Check a list request against ``repository``'s model, whitelists and page sizes.

    Arguments given here add to ``query``'s filters (winning on the same key) and stand in
    for what ``query`` leaves out.

    Raises:
        InvalidQueryError: a filter, sort field, limit, offset or cursor that is not allowed,
            or both an offset and a cursor.
    """
    if query is not None:
        filters = {**query.filters, **(filters or {})}
        order_by = order_by if order_by is not None else query.order_by
        limit = limit if limit is not None else query.limit
        offset = offset if offset is not None else query.offset
        cursor = cursor if cursor is not None else query.cursor
    if cursor is not None and offset:
        raise InvalidQueryError("use either offset or cursor, not both")
    model = repository.model
    page = check_page(
        limit,
        offset or 0,
        default=repository.default_page_size,
        maximum=repository.max_page_size,
    )
    conditions = parse_filters(model, repository.filterable, filters)
    keys = parse_order(model, repository.sortable, repository.default_order, order_by)
    digest = filters_digest(conditions)
    position = None if cursor is None else decode_cursor(model, keys, cursor, digest)
    return PageRequest(conditions, keys, page, offset or 0, position, digest)
