"""Opaque keyset cursors: made from the last row of a page, checked strictly when they return.

A cursor is base64url of compact JSON: the order it belongs to, a digest of the filters, and
the last row's values of the order's columns. Decoding refuses anything else: another shape,
another order or other filters than the request's, a value of the wrong type for its column,
NULL in a NOT NULL column. Each refusal is an :class:`~asyncdal.errors.InvalidQueryError` (a
422 through FastAPI), never a database error.

Cursors are checked, not signed: a client that edits one can only move where its page starts,
which a filter on the sort columns could do too; they carry no secret and grant nothing.

Example:
    >>> token = encode_cursor(Post, keys, post, digest)
    >>> decode_cursor(Post, keys, token, digest)
    [datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), 42]
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import inspect

from asyncdal.errors import InvalidQueryError
from asyncdal.orm._filters import Condition
from asyncdal.orm._ordering import SortKey
from asyncdal.orm._values import check_kind, check_value, python_type

__all__ = ["MAX_CURSOR_LENGTH", "can_encode", "decode_cursor", "encode_cursor", "filters_digest"]

MAX_CURSOR_LENGTH = 2048
"""Longer cursors are refused before they are decoded."""

# Per Python type: to JSON, and back (raising ValueError/TypeError on anything unexpected).
_INT = (lambda value: value, lambda raw: _exact(raw, int))
_CODECS: dict[type[Any], tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    int: _INT,
    bool: (lambda value: value, lambda raw: _exact(raw, bool)),
    str: (lambda value: value, lambda raw: _exact(raw, str)),
    float: (repr, lambda raw: float(_exact(raw, str))),
    Decimal: (str, lambda raw: _finite(Decimal(_exact(raw, str)))),
    datetime: (datetime.isoformat, lambda raw: datetime.fromisoformat(_exact(raw, str))),
    date: (date.isoformat, lambda raw: date.fromisoformat(_exact(raw, str))),
    time: (time.isoformat, lambda raw: time.fromisoformat(_exact(raw, str))),
    timedelta: (
        lambda value: value // timedelta(microseconds=1),
        lambda raw: timedelta(microseconds=_exact(raw, int)),
    ),
    uuid.UUID: (str, lambda raw: uuid.UUID(_exact(raw, str))),
}


def _exact(raw: Any, kind: type[Any]) -> Any:
    # type(), not isinstance(): JSON's true is not an integer here, nor 1 a boolean.
    if type(raw) is not kind:
        raise TypeError(f"expected {kind.__name__}")
    return raw


def _finite(number: Decimal) -> Decimal:
    if not number.is_finite():
        raise ValueError("not a finite number")
    return number


def _codec(model: type[Any], column: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    kind = python_type(inspect(model).columns[column].type)
    if kind is not None and issubclass(kind, enum.Enum):
        enum_class = kind
        return (lambda value: value.name, lambda raw: enum_class[_exact(raw, str)])
    codec = _CODECS.get(kind) if kind is not None else None
    if codec is None:
        raise TypeError(f"no cursor encoding for column {column!r}")
    return codec


def can_encode(model: type[Any], keys: Sequence[SortKey]) -> bool:
    """True when every column of the order has a cursor encoding (numbers, text, booleans,
    dates and times, UUIDs, enums)."""
    try:
        for key in keys:
            _codec(model, key.column)
    except TypeError:
        return False
    return True


def filters_digest(conditions: Sequence[Condition]) -> str:
    """A short digest of the filters, so a cursor is refused with other filters."""
    canonical = sorted((condition.key, _canonical(condition.value)) for condition in conditions)
    encoded = json.dumps(canonical, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def _canonical(value: Any) -> Any:
    if isinstance(value, list | tuple | set | frozenset):
        return sorted(str(item) for item in value)
    return None if value is None else str(value)


def encode_cursor(model: type[Any], keys: Sequence[SortKey], row: Any, digest: str) -> str:
    """The cursor that starts the page after ``row``."""
    values = []
    for key in keys:
        value = getattr(row, key.column)
        values.append(None if value is None else _codec(model, key.column)[0](value))
    payload = {"k": [str(key) for key in keys], "f": digest, "v": values}
    encoded = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    return base64.urlsafe_b64encode(encoded).rstrip(b"=").decode()


def decode_cursor(model: type[Any], keys: Sequence[SortKey], cursor: str, digest: str) -> list[Any]:
    """The position a cursor names: one value per key, checked against its column.

    Raises:
        InvalidQueryError: the cursor is malformed, was made for another order or other
            filters, or holds a value its column cannot have.
    """
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidQueryError("cursor: too long")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidQueryError("cursor: not a cursor this service made") from None
    if not isinstance(payload, dict) or set(payload) != {"k", "f", "v"}:
        raise InvalidQueryError("cursor: not a cursor this service made")
    if payload["k"] != [str(key) for key in keys]:
        raise InvalidQueryError("cursor: made for another sort order; start again without it")
    if payload["f"] != digest:
        raise InvalidQueryError("cursor: made for other filters; start again without it")
    raw_values = payload["v"]
    if not isinstance(raw_values, list) or len(raw_values) != len(keys):
        raise InvalidQueryError("cursor: not a cursor this service made")
    return [_decode_value(model, key, raw) for key, raw in zip(keys, raw_values, strict=True)]


def _decode_value(model: type[Any], key: SortKey, raw: Any) -> Any:
    column = inspect(model).columns[key.column]
    if raw is None:
        if not column.nullable:
            raise InvalidQueryError(f"cursor: {key.column} cannot be NULL")
        return None
    try:
        value = _codec(model, key.column)[1](raw)
    except (ValueError, TypeError, KeyError, InvalidOperation):
        raise InvalidQueryError(f"cursor: invalid value for {key.column}") from None
    check_kind(column.type, value, f"cursor: {key.column}")
    check_value(column.type, value, f"cursor: {key.column}")
    return value
