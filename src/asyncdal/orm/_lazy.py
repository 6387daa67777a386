"""``LAZY_LOADS``: what a lazy load that would run a statement does.

How: a ``do_orm_execute`` listener on the database's session classes. SQLAlchemy calls it for
every statement a session runs, lazy loads included, before any I/O, and tells a lazy load
apart (``ORMExecuteState.lazy_loaded_from``) with the relationship it loads
(``loader_strategy_path``); loads a query asked for (``immediateload``, ``session.refresh(obj,
["books"])``) are let through, and so are those SQLAlchemy runs for its own work (a flush,
the cascade of ``session.delete``), which it exempts from ``lazy="raise"`` too. A lazy load
whose target is already in the identity map (a many-to-one by primary key) runs no statement
and is never seen, which is right: it costs nothing.

Why not a default ``raiseload("*")`` option added to every query: it makes SQLAlchemy refuse
the attribute in every case, ``awaitable_attrs`` (an awaited load that works) included, and
it cannot log and go on (``warn``). Listening at the statement instead keeps SQLAlchemy's
behaviour whole and only decides, per load, whether it may run:

- ``raise`` (the default): refused with :class:`~asyncdal.errors.LazyLoadError`, naming
  ``Model.attribute`` and the loader option that loads it with the query.
- ``warn``: the same message, logged on ``asyncdal.lazy_loads``; an awaited load
  (``await obj.awaitable_attrs.books``) goes on. One in plain code cannot run under asyncio at
  all, and raises :class:`~asyncdal.errors.LazyLoadError` instead of ``MissingGreenlet``.
- ``allow``: nothing is attached.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from asyncdal.engine._sqlalchemy import (
    in_sqlalchemy_greenlet,
    loads_for_a_query,
    may_be_a_lazy_load,
    session_is_flushing,
    sqlalchemy_loads_for_itself,
)
from asyncdal.errors import LazyLoadError
from asyncdal.orm._sessions import SessionClasses
from asyncdal.settings import DatabaseSettings

__all__ = ["guard_lazy_loads", "guarded", "lazy_load_error", "with_lazy_load_guard"]

logger = logging.getLogger("asyncdal.lazy_loads")


def lazy_load_error(state: ORMExecuteState, *, awaited: bool) -> LazyLoadError:
    """The error (and log message) for the lazy load ``state`` is about to run."""
    path = state.loader_strategy_path
    prop: Any = path.path[-1] if path is not None and path.path else None
    if prop is not None and hasattr(prop, "parent") and hasattr(prop, "key"):
        attribute = f"{prop.parent.class_.__name__}.{prop.key}"
        loader = "selectinload" if getattr(prop, "uselist", False) else "joinedload"
    else:
        attribute, loader = "a relationship", "selectinload"
    option = f"{loader}({attribute})"
    how = "an awaited lazy load" if awaited else "a lazy load outside an await"
    message = (
        f"{attribute} is not loaded and {how} would run a statement of its own for each "
        f"object (an N+1 pattern): add .options({option}) to the query that loads them, or "
        "await session.refresh(obj, [...]) once; LAZY_LOADS=warn lets awaited loads go on"
    )
    return LazyLoadError(message, attribute=attribute, option=option)


def guard_lazy_loads(session_class: type[Session], settings: DatabaseSettings) -> None:
    """Apply ``settings.safety.lazy_loads`` to the sessions of ``session_class`` (a class of
    this database's own: listeners on a class reach its subclasses, never its bases)."""
    mode = settings.safety.lazy_loads
    if mode == "allow":
        return

    def check(state: ORMExecuteState) -> None:
        if not may_be_a_lazy_load(state.local_execution_options):
            return
        if not state.is_select or state.lazy_loaded_from is None:
            return
        if loads_for_a_query(state.execution_options) or session_is_flushing(state.session):
            return
        if sqlalchemy_loads_for_itself():
            return
        awaited = in_sqlalchemy_greenlet()
        error = lazy_load_error(state, awaited=awaited)
        if mode == "warn" and awaited:
            logger.warning("%s", error, extra={"attribute": error.attribute})
            return
        raise error

    # First: another listener (the retry of dropped reads) may run the statement itself.
    event.listen(session_class, "do_orm_execute", check, insert=True)


def with_lazy_load_guard(classes: SessionClasses, settings: DatabaseSettings) -> SessionClasses:
    """``classes``, each subclassed and guarded as ``settings.safety.lazy_loads`` says (the
    read-write class may be SQLAlchemy's own ``Session``, which must stay untouched)."""
    if settings.safety.lazy_loads == "allow":
        return classes
    return SessionClasses(
        writer=guarded(classes.writer, settings),
        reader=guarded(classes.reader, settings),
        quick=guarded(classes.quick, settings),
    )


def guarded(base: type[Session], settings: DatabaseSettings) -> type[Session]:
    """A subclass of ``base`` whose sessions follow ``settings.safety.lazy_loads``."""
    if settings.safety.lazy_loads == "allow":
        return base
    session_class = type(base.__name__, (base,), {})
    guard_lazy_loads(session_class, settings)
    return session_class
