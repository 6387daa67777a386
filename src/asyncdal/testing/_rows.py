"""PostgreSQL's rules, in Python, for the in-memory repository: filters with SQL's NULL
semantics, ORDER BY's NULL placement, column defaults, and NOT NULL and unique constraints.

The in-memory repository runs the same checked filters, orders and cursors as the real one
(``asyncdal.orm``); only their evaluation is here. Text compares by code point, as under
PostgreSQL's ``C`` collation; ``icontains`` and friends lower-case both sides as ``lower()``
does for ASCII.

Example:
    >>> rows.sort(key=functools.cmp_to_key(lambda a, b: compare(a, b, keys)))
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import DateTime, PrimaryKeyConstraint, UniqueConstraint, inspect
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.schema import Column

from asyncdal.errors import ConstraintViolationError, UniqueViolationError
from asyncdal.orm._filters import Condition
from asyncdal.orm._ordering import SortKey
from asyncdal.orm._upsert import constraint_name

__all__ = [
    "DATABASE",
    "check_constraints",
    "compare",
    "default_value",
    "matches",
    "onupdate_value",
]

DATABASE = "memory"
"""The ``database`` the in-memory repository's errors name."""

_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda value, operand: bool(value == operand),
    "ne": lambda value, operand: bool(value != operand),
    "lt": lambda value, operand: bool(value < operand),
    "lte": lambda value, operand: bool(value <= operand),
    "gt": lambda value, operand: bool(value > operand),
    "gte": lambda value, operand: bool(value >= operand),
    "in": lambda value, operand: any(value == item for item in operand),
    "contains": lambda value, operand: operand in value,
    "icontains": lambda value, operand: operand.lower() in value.lower(),
    "startswith": lambda value, operand: value.startswith(operand),
    "istartswith": lambda value, operand: value.lower().startswith(operand.lower()),
    "endswith": lambda value, operand: value.endswith(operand),
    "iendswith": lambda value, operand: value.lower().endswith(operand.lower()),
}


def matches(row: Any, condition: Condition) -> bool:
    """Whether ``row`` passes ``condition``, as a ``WHERE`` clause would: a comparison with
    NULL is not true."""
    value = _comparable(getattr(row, condition.column))
    operator, operand = condition.operator, condition.value
    if operator == "isnull":
        return (value is None) is operand
    if operand is None:  # only eq and ne take None: IS NULL, IS NOT NULL
        return (value is None) is (operator == "eq")
    if value is None:
        return False
    if operator == "in":
        operand = [_comparable(item) for item in operand]
    elif not isinstance(operand, str) or not isinstance(value, str):
        operand = _comparable(operand)
    return _TESTS[operator](value, operand)


def _comparable(value: Any) -> Any:
    # An enum is stored and compared by its name, as SQLAlchemy's Enum type does.
    return value.name if isinstance(value, enum.Enum) else value


def _compare_values(left: Any, right: Any) -> int:
    if left is None or right is None:  # NULL after every value, as ORDER BY ... ASC
        return (left is None) - (right is None)
    left, right = _comparable(left), _comparable(right)
    return int(left > right) - int(left < right)


def compare(left: Sequence[Any], right: Sequence[Any], keys: Sequence[SortKey]) -> int:
    """-1, 0 or 1: where the values ``left`` sort against ``right`` in the order ``keys``."""
    for left_value, right_value, key in zip(left, right, keys, strict=True):
        result = _compare_values(left_value, right_value)
        if result:
            return -result if key.descending else result
    return 0


class _DefaultContext:
    """What a context-sensitive default callable gets: the row's values so far."""

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.current_parameters = parameters

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.current_parameters


_NOW = {
    "now",
    "current_timestamp",
    "localtimestamp",
    "statement_timestamp",
    "clock_timestamp",
    "transaction_timestamp",
}
_UUID = {"gen_random_uuid", "uuid_generate_v4"}
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_QUOTED = re.compile(r"^'((?:[^']|'')*)'(::[\w ]+)?$")


def _sql_value(column: Column[Any], expression: Any) -> Any:
    """The value of a SQL default or onupdate the fake understands (now() and friends,
    gen_random_uuid(), literals); NotImplementedError for anything else."""
    if isinstance(expression, FunctionElement):
        name = str(expression.name).lower()
        if name in _NOW:
            return _now(column)
        if name in _UUID:
            return uuid.uuid4()
        if name == "current_date":
            return date.today()
    if isinstance(expression, str):
        # A plain string is a quoted literal (server_default="draft"), cast to the column.
        return _literal(column, expression)
    text = str(expression.text if isinstance(expression, TextClause) else expression).strip()
    lowered = text.lower().removesuffix("()")
    if lowered in _NOW:
        return _now(column)
    if lowered in _UUID:
        return uuid.uuid4()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _NUMBER.match(text):
        return _literal(column, text)
    quoted = _QUOTED.match(text)
    if quoted:
        return _literal(column, quoted.group(1).replace("''", "'"))
    raise NotImplementedError(
        f"the in-memory repository cannot compute {column.table.name}.{column.name}'s "
        f"default ({text}); set the value before add()"
    )


def _literal(column: Column[Any], text: str) -> Any:
    kind = column.type.python_type
    if kind is bool:
        return text.strip().lower() in ("t", "true", "y", "yes", "on", "1")
    return text if kind is str else kind(text)


def _now(column: Column[Any]) -> datetime:
    now = datetime.now(UTC)
    aware = isinstance(column.type, DateTime) and column.type.timezone
    return now if aware else now.replace(tzinfo=None)


def default_value(column: Column[Any], row: dict[str, Any]) -> tuple[bool, Any]:
    """``(True, value)`` when ``column`` has a default the fake can compute for an INSERT
    (Python-side first, as SQLAlchemy sends it; then the server's), else ``(False, None)``."""
    default: Any = column.default
    if default is not None:
        if default.is_scalar:
            return True, default.arg
        if default.is_callable:
            return True, default.arg(_DefaultContext(row))
        if default.is_clause_element:
            return True, _sql_value(column, default.arg)
    server: Any = column.server_default
    if server is not None and getattr(server, "arg", None) is not None:
        return True, _sql_value(column, server.arg)
    return False, None


def onupdate_value(column: Column[Any], row: dict[str, Any]) -> Any:
    """What ``column``'s ``onupdate`` gives for an UPDATE."""
    default: Any = column.onupdate
    if default.is_scalar:
        return default.arg
    if default.is_callable:
        return default.arg(_DefaultContext(row))
    return _sql_value(column, default.arg)


def check_constraints(model: type[Any], obj: Any, others: Sequence[Any]) -> None:
    """Refuse ``obj`` as PostgreSQL would: a NULL in a NOT NULL column, or the key of a unique
    or primary key constraint that one of ``others`` has already (NULL never conflicts).

    Raises:
        ConstraintViolationError: a NOT NULL column is NULL (SQLSTATE 23502).
        UniqueViolationError: a duplicate key (23505), naming the constraint.
    """
    mapper = inspect(model)
    table = mapper.local_table
    for name, column in mapper.columns.items():
        if not column.nullable and getattr(obj, name) is None:
            raise ConstraintViolationError(
                f"database {DATABASE!r}: not_null_violation: ({column.name}) of table "
                f"{table.name!r}",
                database=DATABASE,
                sqlstate="23502",
                table=table.name,
                columns=(column.name,),
            )
    for constraint in table.constraints:
        if not isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint):
            continue
        names = [mapper.get_property_by_column(column).key for column in constraint.columns]
        key = [getattr(obj, name) for name in names]
        if any(value is None for value in key):
            continue
        if any([getattr(other, name) for name in names] == key for other in others):
            columns = tuple(column.name for column in constraint.columns)
            raise UniqueViolationError(
                f"database {DATABASE!r}: duplicate key: a row with the same "
                f"({', '.join(columns)}) already exists in table {table.name!r} "
                f"(constraint {constraint_name(constraint)!r})",
                database=DATABASE,
                sqlstate="23505",
                constraint=constraint_name(constraint),
                table=table.name,
                columns=columns,
            )
