"""``check_value``: what a column's type cannot take is refused before SQL, naming the
parameter (the repository, the in-memory fake and the FastAPI query dependency share it)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import JSON, Date, Enum, Integer, Interval, Numeric, String, Uuid
from sqlalchemy.types import TypeEngine

from asyncdal import InvalidQueryError
from asyncdal.orm._values import check_value


@pytest.mark.parametrize(
    ("column_type", "value", "message"),
    [
        (Numeric(12, 2), "abc", "price: expected Decimal, got str"),
        (Numeric(12, 2), "5", "price: expected Decimal, got str"),
        (Integer(), "5", "price: expected int, got str"),
        (Date(), "2026-01-01", "price: expected date, got str"),
        (Interval(), "1 day", "price: expected timedelta, got str"),
        (String(), "a\x00b", "price: text may not contain a NUL character"),
        (
            String(),
            "a\ud800",
            r"price: text may not contain a lone surrogate \(U\+D800 at position 1\)",
        ),
        (String(), "\udfff", r"lone surrogate \(U\+DFFF at position 0\)"),
    ],
)
def test_what_the_column_cannot_take_is_refused_naming_the_parameter(
    column_type: TypeEngine[Any], value: Any, message: str
) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        check_value(column_type, value, "price")


@pytest.mark.parametrize(
    ("column_type", "value"),
    [
        (String(), "abc"),
        (String(), "\U0001f600"),  # a pair of surrogates in UTF-16, one code point here
        (Uuid(), str(uuid.uuid4())),
        (Enum("a", "b"), "a"),
        (JSON(), "x"),  # left to PostgreSQL
        (Numeric(12, 2), None),
    ],
)
def test_what_the_column_takes_passes(column_type: TypeEngine[Any], value: Any) -> None:
    check_value(column_type, value, "price")
