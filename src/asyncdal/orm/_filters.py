"""Filters: ``{"column__operator": value}`` parsed, checked, and turned into SQL.

Parsing and checking are shared by the repository, the in-memory fake and the FastAPI query
dependency, so all three accept and refuse the same filters with the same messages.

NULL follows SQL: a comparison with a NULL column is not true, so ``price__lt``, ``name__ne``
and ``name__contains`` never match a row whose column is NULL. To ask for NULL, use
``column__isnull=True`` (or ``column=None``, which means ``IS NULL`` as in SQLAlchemy, and
``column__ne=None``, ``IS NOT NULL``). Any other operator refuses None.

Example:
    >>> conditions = parse_filters(Post, frozenset({"title"}), {"title__icontains": "50%"})
    >>> statement = select(Post).where(*(where_clause(Post, c) for c in conditions))
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Enum, String, inspect
from sqlalchemy.sql.schema import Column

from asyncdal.errors import InvalidQueryError
from asyncdal.orm._values import check_kind, check_value, integer_maximum, python_type

__all__ = [
    "COMPARISONS",
    "OPERATORS",
    "TEXT_OPERATORS",
    "Condition",
    "check_allowed",
    "check_key",
    "operators_for",
    "parse_filters",
    "where_clause",
]

COMPARISONS = ("lt", "lte", "gt", "gte")
TEXT_OPERATORS = ("contains", "icontains", "startswith", "istartswith", "endswith", "iendswith")
OPERATORS = ("eq", "ne", *COMPARISONS, "in", *TEXT_OPERATORS, "isnull")

# Python types PostgreSQL orders the same way Python does (text under the C collation).
_ORDERED = ("int", "float", "Decimal", "str", "datetime", "date", "time", "timedelta", "UUID")


@dataclass(frozen=True, slots=True)
class Condition:
    """One checked filter.

    Attributes:
        key: the filter as given (``price__lt``), for messages.
        column: the column's attribute name (``price``).
        operator: one of :data:`OPERATORS`.
        value: the value, checked against the column's type.
    """

    key: str
    column: str
    operator: str
    value: Any


def check_allowed(name: str, allowed: frozenset[str], purpose: str) -> None:
    """Refuse a column that is not whitelisted for ``purpose`` (sort, filter)."""
    if name not in allowed:
        choices = ", ".join(sorted(allowed)) or "none"
        raise InvalidQueryError(f"cannot {purpose} by {name!r}; allowed: {choices}")


def is_text(column: Column[Any]) -> bool:
    """True for a text column (``LIKE`` applies); an enum is not one."""
    return isinstance(column.type, String) and not isinstance(column.type, Enum)


def operators_for(column: Column[Any]) -> tuple[str, ...]:
    """The operators that apply to ``column``: comparisons for ordered types, text operators
    for text, ``isnull`` for nullable columns.

    Example:
        >>> operators_for(Post.__table__.c.title)
        ('eq', 'ne', 'lt', 'lte', 'gt', 'gte', 'in', 'contains', ..., 'iendswith')
    """
    kind = python_type(column.type)
    found = ["eq", "ne"]
    if kind is not None and kind.__name__ in _ORDERED:
        found += COMPARISONS
    found.append("in")
    if is_text(column):
        found += TEXT_OPERATORS
    if column.nullable:
        found.append("isnull")
    return tuple(found)


def parse_filters(
    model: type[Any], filterable: frozenset[str], filters: Mapping[str, Any] | None
) -> list[Condition]:
    """Check ``filters`` against the whitelist and the columns' types.

    Args:
        model: the mapped class.
        filterable: the columns that may be filtered on.
        filters: ``{"column": value}`` (equality) or ``{"column__operator": value}``.

    Raises:
        InvalidQueryError: a column that is not whitelisted, an operator that is unknown or
            does not apply to the column, or a value the column cannot be compared with; the
            message names the filter.
    """
    columns = inspect(model).columns
    conditions = []
    for key, value in (filters or {}).items():
        name, _, operator = key.partition("__")
        operator = operator or "eq"
        if operator not in OPERATORS:
            raise InvalidQueryError(
                f"{key}: unknown filter operator {operator!r}; use one of {', '.join(OPERATORS)}"
            )
        check_allowed(name, filterable, "filter")
        checked = _check_operand(columns[name], key, operator, value)
        conditions.append(Condition(key, name, operator, checked))
    return conditions


def check_key(model: type[Any], ident: Any) -> tuple[Any, ...]:
    """``ident`` as the primary key's values (a tuple), each checked against its column as a
    filter's value is; the repository and the in-memory fake look rows up by it.

    None passes (no row has it); a UUID may come as text.

    Raises:
        InvalidQueryError: too many or too few values, or a value its column cannot take
            (text for an integer key, an integer past BIGINT), naming the column.

    Example:
        >>> check_key(Post, "abc")
        Traceback (most recent call last):
        InvalidQueryError: id: expected int, got str
    """
    keys = inspect(model).primary_key
    if type(ident) is int and len(keys) == 1:
        # The common case, an integer id, without the general checks' calls.
        maximum = integer_maximum(keys[0].type)
        if maximum is not None and -maximum - 1 <= ident <= maximum:
            return (ident,)
    values = ident if isinstance(ident, tuple) else (ident,)
    if len(values) != len(keys):
        raise InvalidQueryError(f"expected a key of {len(keys)} value(s)")
    return tuple(
        None if value is None else _checked(column, column.key, value)
        for column, value in zip(keys, values, strict=True)
    )


def _check_operand(column: Column[Any], key: str, operator: str, value: Any) -> Any:
    """The value, checked (and a UUID given as text made a UUID); a list for ``in``."""
    # isnull applies to any column (true on a NOT NULL one matches nothing, as in SQL).
    if operator not in (*operators_for(column), "isnull"):
        raise InvalidQueryError(f"{key}: {operator!r} does not apply to this column")
    if operator == "isnull":
        if not isinstance(value, bool):
            raise InvalidQueryError(f"{key}: expected true or false")
        return value
    if operator == "in":
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            raise InvalidQueryError(f"{key}: expected a list of values")
        # A list: an iterator would be used up by the checks before the query ran.
        return [_checked(column, key, item) for item in value]
    if value is None and operator in ("eq", "ne"):
        return None
    return _checked(column, key, value)


def _checked(column: Column[Any], key: str, value: Any) -> Any:
    if value is None:
        raise InvalidQueryError(f"{key}: NULL never compares true; use __isnull to match NULL")
    if isinstance(value, str) and python_type(column.type) is uuid.UUID:
        try:
            value = uuid.UUID(value)
        except ValueError:
            raise InvalidQueryError(f"{key}: not a UUID") from None
    check_kind(column.type, value, key)
    check_value(column.type, value, key)
    return value


# autoescape: %, _ and the escape character itself are matched literally, not as wildcards.
_SQL: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "eq": lambda column, value: column.is_(None) if value is None else column == value,
    "ne": lambda column, value: column.is_not(None) if value is None else column != value,
    "lt": lambda column, value: column < value,
    "lte": lambda column, value: column <= value,
    "gt": lambda column, value: column > value,
    "gte": lambda column, value: column >= value,
    "in": lambda column, value: column.in_(list(value)),
    "contains": lambda column, value: column.contains(value, autoescape=True),
    "icontains": lambda column, value: column.icontains(value, autoescape=True),
    "startswith": lambda column, value: column.startswith(value, autoescape=True),
    "istartswith": lambda column, value: column.istartswith(value, autoescape=True),
    "endswith": lambda column, value: column.endswith(value, autoescape=True),
    "iendswith": lambda column, value: column.iendswith(value, autoescape=True),
    "isnull": lambda column, value: column.is_(None) if value else column.is_not(None),
}


def where_clause(model: type[Any], condition: Condition) -> ColumnElement[bool]:
    """The SQL of one checked condition."""
    return _SQL[condition.operator](getattr(model, condition.column), condition.value)
