"""The one place that relies on SQLAlchemy details beyond its documented API.

Each use is checked by ``tests/unit/test_private_apis.py``, which fails loudly when SQLAlchemy
changes shape, rather than letting a fallback hide it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, cast

import sqlalchemy.util

__all__ = ["await_in_greenlet", "select_locks_rows"]

T = TypeVar("T")


def await_in_greenlet(awaitable: Awaitable[T]) -> T:
    """Await from SQLAlchemy's sync code running in a greenlet.

    SQLAlchemy 2.1 calls its helper ``await_``; 2.0 has only ``await_only`` (deprecated in 2.1).
    """
    helper = getattr(sqlalchemy.util, "await_", None)
    if helper is None:
        helper = sqlalchemy.util.await_only
    return cast("T", helper(awaitable))


def select_locks_rows(select: sqlalchemy.sql.selectable.GenerativeSelect) -> bool:
    """True when ``select`` has ``with_for_update()`` (FOR UPDATE, FOR SHARE and their kin).

    SQLAlchemy keeps it in the private ``_for_update_arg``; no public attribute tells.
    """
    return select._for_update_arg is not None
