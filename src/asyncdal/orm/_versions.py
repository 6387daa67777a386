"""Optimistic concurrency on a version column, SQLAlchemy's ``version_id_col``.

A model opts in with ``__mapper_args__ = {"version_id_col": version}``: SQLAlchemy then adds
``AND version = :seen`` to each ``UPDATE`` and ``DELETE`` of a row and bumps the version, and a
row that another transaction changed first matches nothing. SQLAlchemy reports that as
``StaleDataError`` at flush; :func:`flush` turns it into
:class:`~asyncdal.errors.StaleVersionError` (412 through FastAPI).

Example:
    >>> class Post(Base):
    ...     __tablename__ = "posts"
    ...     id: Mapped[int] = mapped_column(primary_key=True)
    ...     version: Mapped[int] = mapped_column()
    ...     __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
    >>> await posts.update(post_id, expected_version=3, title="New")  # 412 unless still 3
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from asyncdal.errors import StaleVersionError

__all__ = ["check_expected_version", "flush", "next_version", "version_attribute"]


def version_attribute(model: type[Any]) -> str | None:
    """The attribute name of the model's version column, or None without one."""
    mapper = inspect(model)
    column = mapper.version_id_col
    if column is None:
        return None
    return str(mapper.get_property_by_column(column).key)


def next_version(model: type[Any], current: Any) -> Any:
    """The version after ``current``, as SQLAlchemy's generator makes it (None when the
    application sets versions itself: ``version_id_generator=False``)."""
    generator = inspect(model).version_id_generator
    return generator(current) if callable(generator) else None


def check_expected_version(obj: Any, expected: Any) -> None:
    """Refuse to go on when ``obj``'s version is not ``expected`` (None: no check).

    Raises:
        StaleVersionError: the object's version differs.
        TypeError: the model has no version column.
    """
    if expected is None:
        return
    model = type(obj)
    name = version_attribute(model)
    if name is None:
        raise TypeError(
            f"{model.__name__} has no version column: add one and "
            "__mapper_args__ = {'version_id_col': ...} to use expected_version"
        )
    actual = getattr(obj, name)
    if actual != expected:
        raise StaleVersionError(
            f"{model.__name__} is at version {actual}, not {expected}: it changed since it was "
            "read; read it again",
            model=model.__name__,
            expected=expected,
            actual=actual,
        )


async def flush(session: AsyncSession) -> None:
    """``session.flush()``, with a version conflict raised as ``StaleVersionError``."""
    try:
        await session.flush()
    except StaleDataError as error:
        raise StaleVersionError(
            "a row changed or was deleted by another transaction since it was read (its "
            "version no longer matches); nothing was saved: read it again"
        ) from error
