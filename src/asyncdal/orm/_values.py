"""Check a value against the column it is compared with, before it reaches SQL.

A value that PostgreSQL cannot take for the column's type (an integer past BIGINT, a decimal
with more digits than ``NUMERIC(p, s)`` holds, text with a NUL byte) would otherwise fail in
the driver or the server as a data error. Checked here, it is an
:class:`~asyncdal.errors.InvalidQueryError` naming the parameter: a 422 through FastAPI.

Only what the column's type says for sure is checked; a value whose type does not match (a
string for an integer column) is left to SQLAlchemy and the driver, whose errors the error map
translates.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Integer, Numeric, SmallInteger, String
from sqlalchemy.types import TypeEngine

from asyncdal.errors import InvalidQueryError

__all__ = ["MAX_BIGINT", "check_value", "check_values"]

MAX_BIGINT = 2**63 - 1
"""The largest BIGINT, also the largest offset PostgreSQL takes."""

# Most specific first: BigInteger and SmallInteger are Integers too.
_INTEGER_RANGES: tuple[tuple[type[TypeEngine[Any]], int], ...] = (
    (BigInteger, MAX_BIGINT),
    (SmallInteger, 2**15 - 1),
    (Integer, 2**31 - 1),
)


def check_value(column_type: TypeEngine[Any], value: Any, parameter: str) -> None:
    """Refuse ``value`` when the column's type cannot hold it.

    Args:
        column_type: the type of the column the value is compared with or stored in.
        value: the value (None always passes: it means SQL NULL).
        parameter: how the caller named it (``price__lt``), for the message.

    Raises:
        InvalidQueryError: the value is out of range for the type, naming ``parameter``.
    """
    if value is None:
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidQueryError(f"{parameter}: text may not contain a NUL character")
        return
    if isinstance(value, bool):
        return
    if isinstance(value, int) and isinstance(column_type, Integer):
        maximum = next(top for kind, top in _INTEGER_RANGES if isinstance(column_type, kind))
        if not -maximum - 1 <= value <= maximum:
            raise InvalidQueryError(
                f"{parameter}: {value} is out of range for this column "
                f"({-maximum - 1} to {maximum})"
            )
        return
    if isinstance(value, int | Decimal | float) and isinstance(column_type, Numeric):
        _check_numeric(column_type, value, parameter)


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
