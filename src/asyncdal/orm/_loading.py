"""Eager loading: ``load=["author", "comments.author"]`` or SQLAlchemy loader options.

A name must be a relationship of the model (a dotted path follows relationships), so a name
from a request cannot reach anything else; each becomes ``selectinload``, which suits async
code: the related rows come in one more ``SELECT ... WHERE id IN (...)`` per relationship,
never as a lazy load (which async code cannot do). A loader option (``joinedload(Post.author)``)
is used as given.

Example:
    >>> options = loader_options(Post, ["author", "comments.author"])
    >>> statement = select(Post).options(*options)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import selectinload
from sqlalchemy.sql.base import ExecutableOption

from asyncdal.errors import InvalidQueryError

__all__ = ["Load", "check_load_names", "check_rows_load", "loader_options"]

Load = Iterable[str | ExecutableOption] | None
"""What ``load=`` takes: relationship names (dotted paths) and loader options."""


def _walk(model: type[Any], path: str) -> list[Any]:
    """The relationship attributes along ``path``, checked one by one."""
    attributes = []
    current = model
    for name in path.split("."):
        relationships = inspect(current).relationships
        if name not in relationships:
            choices = ", ".join(sorted(relationships.keys())) or "none"
            raise InvalidQueryError(
                f"cannot load {path!r}: {current.__name__} has no relationship {name!r}; "
                f"relationships: {choices}"
            )
        attributes.append(getattr(current, name))
        current = relationships[name].mapper.class_
    return attributes


def check_load_names(model: type[Any], load: Load) -> None:
    """Check the names in ``load`` (the in-memory fake loads nothing, but refuses the same).

    Raises:
        InvalidQueryError: a name that is not a relationship path of ``model``.
        TypeError: an item that is neither a name nor a loader option.
    """
    for item in load or ():
        if isinstance(item, str):
            _walk(model, item)
        elif not isinstance(item, ExecutableOption):
            raise TypeError(f"load= takes relationship names or loader options, not {item!r}")


def loader_options(model: type[Any], load: Load) -> list[ExecutableOption]:
    """Loader options for ``load``: ``selectinload`` along each named path."""
    check_load_names(model, load)
    options: list[ExecutableOption] = []
    for item in load or ():
        if isinstance(item, str):
            first, *rest = _walk(model, item)
            option = selectinload(first)
            for attribute in rest:
                option = option.selectinload(attribute)
            options.append(option)
        else:
            options.append(item)
    return options


def check_rows_load(load: Load, rows: bool) -> None:
    """Refuse ``load`` with ``rows=True``: plain dicts have no relationships to load.

    Raises:
        TypeError: both were given.
    """
    if rows and load is not None:
        raise TypeError("rows=True gives plain dicts, which have no relationships to load")
