"""Check a value against the column it is compared with, before it reaches SQL.

A value that PostgreSQL cannot take for the column's type (an integer past BIGINT, a decimal
with more digits than ``NUMERIC(p, s)`` holds, text with a NUL character or a lone surrogate,
text for a number, date or other non-text column) would otherwise fail in the driver or the
server as a data error that names no parameter, or as a ``ProgrammingError`` (``operator does
not exist: numeric > character varying``). Checked here, it is an
:class:`~asyncdal.errors.InvalidQueryError` naming the parameter: a 422 through FastAPI.

Text is refused for a number, boolean, date, time or interval column; :func:`check_kind`
checks the kind of the other values.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, Numeric, SmallInteger, String
from sqlalchemy.types import TypeEngine

from asyncdal.errors import InvalidQueryError

__all__ = [
    "MAX_BIGINT",
    "check_kind",
    "check_value",
    "check_values",
    "integer_maximum",
    "python_type",
]

MAX_BIGINT = 2**63 - 1
"""The largest BIGINT, also the largest offset PostgreSQL takes."""

# Most specific first: BigInteger and SmallInteger are Integers too.
_INTEGER_RANGES: tuple[tuple[type[TypeEngine[Any]], int], ...] = (
    (BigInteger, MAX_BIGINT),
    (SmallInteger, 2**15 - 1),
    (Integer, 2**31 - 1),
)


def integer_maximum(column_type: TypeEngine[Any]) -> int | None:
    """The largest value an integer column of ``column_type`` holds; None for other types."""
    for kind, top in _INTEGER_RANGES:
        if isinstance(column_type, kind):
            return top
    return None


def check_value(column_type: TypeEngine[Any], value: Any, parameter: str) -> None:
    """Refuse ``value`` when the column's type cannot hold it.

    Args:
        column_type: the type of the column the value is compared with or stored in.
        value: the value (None always passes: it means SQL NULL).
        parameter: how the caller named it (``price__lt``), for the message.

    Raises:
        InvalidQueryError: the value is out of range for the type, or text the column cannot
            take (a NUL character, a lone surrogate, text for a number or date), naming
            ``parameter``.

    Example:
        >>> check_value(Numeric(12, 2), "abc", "price__gt")
        Traceback (most recent call last):
        InvalidQueryError: price__gt: expected Decimal, got str
    """
    if value is None:
        return
    if isinstance(value, str):
        _check_text(column_type, value, parameter)
        return
    if isinstance(value, bool):
        return
    if isinstance(value, int) and isinstance(column_type, Integer):
        maximum = integer_maximum(column_type)
        assert maximum is not None  # every Integer is one of the ranges' kinds
        if not -maximum - 1 <= value <= maximum:
            raise InvalidQueryError(
                f"{parameter}: {value} is out of range for this column "
                f"({-maximum - 1} to {maximum})"
            )
        return
    if isinstance(value, int | Decimal | float) and isinstance(column_type, Numeric):
        _check_numeric(column_type, value, parameter)


def _check_text(column_type: TypeEngine[Any], value: str, parameter: str) -> None:
    if "\x00" in value:
        raise InvalidQueryError(f"{parameter}: text may not contain a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError as error:
        # JSON's "\ud800" decodes to one; UTF-8, and so PostgreSQL and asyncpg, cannot hold it.
        code = ord(value[error.start])
        raise InvalidQueryError(
            f"{parameter}: text may not contain a lone surrogate (U+{code:04X} at position "
            f"{error.start})"
        ) from None
    kind = python_type(column_type)
    if kind in _NOT_TEXT:
        raise InvalidQueryError(f"{parameter}: expected {kind.__name__}, got str")


# Column kinds PostgreSQL will not compare with text (a literal, or a parameter asyncpg typed
# as text); JSON, arrays and types of their own are left to PostgreSQL.
_NOT_TEXT = frozenset({int, float, Decimal, bool, datetime, date, time, timedelta})


def python_type(column_type: TypeEngine[Any]) -> type[Any] | None:
    """The Python type of a column's values (``Decimal`` for ``NUMERIC``), or None when the
    type does not say (a user-defined type without ``python_type``)."""
    try:
        kind = column_type.python_type
    except NotImplementedError:
        return None
    return kind if isinstance(kind, type) else None


# What a filter may compare a column of each Python type with. Anything else would compare
# differently in Python than in PostgreSQL (or not at all), so it is refused for both.
_NUMBERS = (int, float, Decimal)
_ACCEPTED: dict[type[Any], tuple[type[Any], ...]] = {
    int: (int,),
    float: _NUMBERS,
    Decimal: _NUMBERS,
    str: (str,),
    bool: (bool,),
    datetime: (datetime,),
    date: (date,),
    time: (time,),
    timedelta: (timedelta,),
    uuid.UUID: (uuid.UUID,),
}


def check_kind(column_type: TypeEngine[Any], value: Any, parameter: str) -> None:
    """Refuse a filter value of another kind than the column's (text for a number, a date for
    a timestamp, a naive datetime for a column ``WITH TIME ZONE``).

    Args:
        column_type: the type of the column the value is compared with.
        value: the value (None always passes).
        parameter: how the caller named it, for the message.

    Raises:
        InvalidQueryError: the value cannot be compared with the column, naming ``parameter``.

    Example:
        >>> check_kind(Integer(), "7", "stock__lt")
        Traceback (most recent call last):
        InvalidQueryError: stock__lt: expected int, got str
    """
    kind = python_type(column_type)
    if value is None or kind is None:
        return
    if issubclass(kind, enum.Enum):
        accepted: tuple[type[Any], ...] = (kind, str)
    else:
        accepted = _ACCEPTED.get(kind, ())
    if not accepted:
        return  # JSON, arrays and other types: left to PostgreSQL
    # bool is an int, and a datetime is a date, to Python but not to PostgreSQL.
    wrong = (
        not isinstance(value, accepted)
        or (isinstance(value, bool) and kind is not bool)
        or (isinstance(value, datetime) and kind is date)
    )
    if wrong:
        raise InvalidQueryError(
            f"{parameter}: expected {kind.__name__}, got {type(value).__name__}"
        )
    if isinstance(value, datetime) and isinstance(column_type, DateTime):
        aware = value.utcoffset() is not None
        if aware != bool(column_type.timezone):
            needs = "with" if column_type.timezone else "without"
            raise InvalidQueryError(f"{parameter}: this column needs a datetime {needs} time zone")


def check_values(column_type: TypeEngine[Any], values: Iterable[Any], parameter: str) -> None:
    """:func:`check_value` for each of ``values`` (an ``__in`` filter)."""
    for value in values:
        check_value(column_type, value, parameter)


def _check_numeric(column_type: Numeric[Any], value: float | Decimal, parameter: str) -> None:
    if isinstance(column_type, Integer | String) or column_type.precision is None:
        return
    # A float through str(): its shortest repr, not its binary expansion's 50-odd digits.
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        return  # PostgreSQL's NUMERIC takes NaN and, from 14 on, infinity
    whole_digits = column_type.precision - (column_type.scale or 0)
    if abs(number) >= Decimal(10) ** whole_digits:
        raise InvalidQueryError(
            f"{parameter}: {number} has more than {whole_digits} digit(s) before the point, "
            f"which this column (NUMERIC({column_type.precision}, {column_type.scale or 0})) "
            "cannot hold"
        )
