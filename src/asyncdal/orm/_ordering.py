"""Sort orders and keyset ("seek") conditions.

An order is the sort fields asked for, then the repository's ``default_order``, then the
primary key: every order is total, so pages never skip or repeat a row, and a keyset cursor
names exactly one position.

NULLs sort as PostgreSQL sorts them by default: after every value ascending, before every value
descending. The keyset condition follows the same rule, so a nullable sort column pages
correctly by cursor too.

Example:
    >>> keys = parse_order(Post, frozenset({"title"}), ("id",), "-title")
    >>> [str(key) for key in keys]
    ['-title', 'id']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, inspect, literal, or_, tuple_

from asyncdal.errors import InvalidQueryError
from asyncdal.orm._filters import check_allowed

__all__ = ["SortKey", "after_clause", "order_clauses", "parse_order"]


@dataclass(frozen=True, slots=True)
class SortKey:
    """One field of an order.

    Attributes:
        column: the column's attribute name.
        descending: True for ``-column``.
    """

    column: str
    descending: bool = False

    @classmethod
    def parse(cls, field: str) -> SortKey:
        """``"-price"`` → ``SortKey("price", descending=True)``."""
        return cls(field.removeprefix("-"), field.startswith("-"))

    def __str__(self) -> str:
        return f"-{self.column}" if self.descending else self.column


def parse_order(
    model: type[Any],
    sortable: frozenset[str],
    default_order: Sequence[str],
    order_by: str | Sequence[str] | None,
) -> tuple[SortKey, ...]:
    """The whole order: the fields asked for, then ``default_order``, then the primary key.

    Raises:
        InvalidQueryError: a field that is not ``sortable``, or one named twice.
    """
    fields = [order_by] if isinstance(order_by, str) else list(order_by or ())
    keys: list[SortKey] = []
    named: set[str] = set()
    for field in fields:
        key = SortKey.parse(field)
        check_allowed(key.column, sortable, "sort")
        if key.column in named:
            raise InvalidQueryError(f"cannot sort by {key.column!r} twice")
        keys.append(key)
        named.add(key.column)
    primary_key = [column.key for column in inspect(model).primary_key]
    for key in [*map(SortKey.parse, default_order), *map(SortKey, primary_key)]:
        if key.column not in named:
            keys.append(key)
            named.add(key.column)
    return tuple(keys)


def order_clauses(model: type[Any], keys: Sequence[SortKey]) -> list[ColumnElement[Any]]:
    """``ORDER BY`` clauses for ``keys`` (PostgreSQL's default NULL placement)."""
    return [
        getattr(model, key.column).desc() if key.descending else getattr(model, key.column).asc()
        for key in keys
    ]


def after_clause(
    model: type[Any], keys: Sequence[SortKey], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows that come after the position ``values`` (one per key) in the order ``keys``.

    With every column NOT NULL and one direction, a row comparison
    (``(price, id) > (:price, :id)``) that a matching index serves; otherwise the expanded
    form ``a > :a OR (a = :a AND (b > :b OR ...))`` with NULL placed as in ``ORDER BY``.
    """
    columns = inspect(model).columns
    attributes = [getattr(model, key.column) for key in keys]
    typed = [
        literal(value, columns[key.column].type) for key, value in zip(keys, values, strict=True)
    ]
    nullable = [bool(columns[key.column].nullable) for key in keys]
    directions = {key.descending for key in keys}
    if not any(nullable) and len(directions) == 1:
        row, position = tuple_(*attributes), tuple_(*typed)
        return row < position if keys[0].descending else row > position
    branches = []
    for index, key in enumerate(keys):
        beyond = _beyond(attributes[index], typed[index], values[index], key, nullable[index])
        if beyond is None:
            continue
        same = [
            attributes[j].is_(None) if values[j] is None else attributes[j] == typed[j]
            for j in range(index)
        ]
        branches.append(and_(*same, beyond))
    return or_(*branches) if branches else false()


def _beyond(
    attribute: ColumnElement[Any],
    typed: ColumnElement[Any],
    value: Any,
    key: SortKey,
    nullable: bool,
) -> ColumnElement[bool] | None:
    """Rows past ``value`` in this one column; None when none can be."""
    if key.descending:  # NULLS FIRST: every value comes after NULL
        return attribute.is_not(None) if value is None else attribute < typed
    if value is None:  # NULLS LAST: nothing comes after NULL
        return None
    return or_(attribute > typed, attribute.is_(None)) if nullable else attribute > typed
