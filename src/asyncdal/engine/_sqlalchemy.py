"""The one place that relies on SQLAlchemy details beyond its documented API.

Each use is checked by ``tests/unit/test_private_apis.py``, which fails loudly when SQLAlchemy
changes shape, rather than letting a fallback hide it.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping
from types import FrameType
from typing import Any, TypeVar, cast

import greenlet  # type: ignore[import-untyped]
import sqlalchemy.engine
import sqlalchemy.orm
import sqlalchemy.orm.attributes
import sqlalchemy.util
import sqlalchemy.util.concurrency
from sqlalchemy.orm.base import PassiveFlag

__all__ = [
    "add_loaded",
    "await_in_greenlet",
    "caller_frame",
    "check_in_unused",
    "cursor_listeners",
    "fail_as_a_flush",
    "has_load_listeners",
    "in_sqlalchemy_greenlet",
    "listeners_kept",
    "listeners_now",
    "loads_for_a_query",
    "may_be_a_lazy_load",
    "own_dispatch",
    "register_inserted",
    "select_locks_rows",
    "session_has_changes",
    "session_holds_new",
    "session_is_flushing",
    "sqlalchemy_loads_for_itself",
]

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


def in_sqlalchemy_greenlet() -> bool:
    """True when SQLAlchemy's sync code may do I/O here: it runs in the greenlet an awaited
    call (``await session.execute(...)``, ``awaitable_attrs``) started, not in plain code.

    SQLAlchemy answers it with ``sqlalchemy.util.concurrency.in_greenlet``, not documented.
    """
    return bool(sqlalchemy.util.concurrency.in_greenlet())


def caller_frame() -> FrameType | None:
    """The innermost frame of the code that called into SQLAlchemy.

    Inside SQLAlchemy's greenlet the frames stop at the greenlet's start; the caller's (the
    application's ``await``) continue in the parent greenlet, suspended where it switched.
    """
    # in_sqlalchemy_greenlet() inlined (it runs at every checkout with leak detection on):
    # SQLAlchemy marks its greenlets with this attribute, which it does not document.
    current = greenlet.getcurrent()
    if getattr(current, "__sqlalchemy_greenlet_provider__", False):
        parent = current.parent
        if parent is not None:
            frame: FrameType | None = parent.gr_frame
            return frame
    return sys._getframe(1)


def loads_for_a_query(execution_options: Mapping[str, Any]) -> bool:
    """True when a relationship load runs for a query that asked for it (``immediateload``,
    ``session.refresh(obj, ["books"])``), not on first access of the attribute.

    SQLAlchemy passes the query's context down in the ``sa_top_level_orm_context``
    execution option, which it does not document.
    """
    return "sa_top_level_orm_context" in execution_options


def check_in_unused(fairy: Any) -> None:
    """Give ``fairy`` (a pooled connection checked out with ``raw_connection()``) back to the
    pool; when SQLAlchemy's asyncpg adapter under it began no transaction, without the
    pool's rollback-on-return, which would do nothing then.

    Reads on the driver never go through the adapter: its rollback is a call chain that
    finds nothing to roll back (measured, the catalog's ``get``: about 15 thousand
    instructions of its 1.1 million per request). The checkin with the reset already done is
    the pool's private ``_close_special(transaction_reset=True)`` (what a SQLAlchemy
    ``Connection`` uses after its own rollback), and the adapter's transaction its private
    ``_transaction``; any other adapter is given back as usual.
    """
    if getattr(fairy.dbapi_connection, "_transaction", False) is None:
        fairy._close_special(transaction_reset=True)
    else:
        fairy.close()


def cursor_listeners(engine: sqlalchemy.engine.Engine) -> list[Any]:
    """Every ``before_cursor_execute`` and ``after_cursor_execute`` listener of ``engine``.

    SQLAlchemy's ``event.contains`` tells about one known function only; the list of all is
    in the engine's ``dispatch``, which is not documented.
    """
    dispatch = engine.dispatch
    return [*dispatch.before_cursor_execute, *dispatch.after_cursor_execute]


def listeners_now(dispatch: Any, first: str, second: str) -> tuple[Any, ...]:
    """The collections holding the listeners of events ``first`` and ``second`` of
    ``dispatch`` (an engine's or a session's), as they are: equal to a
    :func:`listeners_kept` of the same events exactly when the same functions listen, in the
    same order.

    Comparing them runs in C, element by element, where listing the listeners through
    SQLAlchemy's collections costs a Python call per collection (measured, the catalog's
    ``get``: about 1.2 us of the 1.6 us its two listener checks took per read).

    The listeners of an event are in two collections, the class's (``parent_listeners``) and
    the instance's own (``listeners``, replaced when its first listener comes); SQLAlchemy
    changes them in place. Neither is documented.
    """
    one = getattr(dispatch, first)
    two = getattr(dispatch, second)
    return (one.parent_listeners, one.listeners, two.parent_listeners, two.listeners)


def own_dispatch(target: Any) -> Any | None:
    """The dispatch of ``target`` (a session) when it has one of its own yet, else None: the
    listeners of its class are then all there is to it.

    Reading ``target.dispatch`` makes one at the first read (SQLAlchemy's dispatcher, a
    descriptor, stores it in the instance's ``__dict__``): a chain of Python calls, then one
    per event asked about, for each session. Not documented.
    """
    return target.__dict__.get("dispatch")


def listeners_kept(dispatch: Any, first: str, second: str) -> tuple[Any, ...]:
    """A copy of :func:`listeners_now`, to compare later ones with. Another shape than the
    two SQLAlchemy uses for an event (a joined dispatcher's, for an engine with execution
    options) gives a copy equal to nothing: the caller looks at the listeners every time."""
    kept: list[Any] = []
    for collection in listeners_now(dispatch, first, second):
        if isinstance(collection, deque):
            kept.append(deque(collection))
        elif collection == ():
            kept.append(())
        else:
            return (object(),)
    return tuple(kept)


def has_load_listeners(mapper: sqlalchemy.orm.Mapper[Any]) -> bool:
    """True when instances of ``mapper`` have ``load`` or ``refresh`` listeners (a
    ``@reconstructor``, say), which only the ORM's own loading calls.

    They live in the class manager's ``dispatch``, which is not documented.
    """
    dispatch = mapper.class_manager.dispatch
    return bool(dispatch.load) or bool(dispatch.refresh)


def add_loaded(
    session: sqlalchemy.orm.Session,
    mapper: sqlalchemy.orm.Mapper[Any],
    key: Any,
    values: Iterable[tuple[str, Any]],
    *,
    listeners_checked: bool = False,
) -> Any:
    """A new instance of ``mapper`` holding ``values`` as loaded, persistent in ``session``
    under identity ``key``: what the ORM's own loading does for a row it has not seen
    (``sqlalchemy.orm.loading``, ``_instance``), step for step.

    ``Session.add`` of a detached instance gets there too, through the cascade, the attach
    events and an autobegin: measured three times the cost per instance (a page of 50). The
    steps, and the identity map's ``_add_unpresent``, are not documented. Refuses a session
    with ``loaded_as_persistent`` listeners, which the ORM's loading would call, unless the
    caller has just found it has none (``listeners_checked``).
    """
    if not listeners_checked and session.dispatch.loaded_as_persistent:
        raise ValueError("the session has loaded_as_persistent listeners; load the usual way")
    instance = mapper.class_manager.new_instance()
    state = sqlalchemy.orm.attributes.instance_state(instance)
    state.key = key
    state.identity_token = key[2]
    state.session_id = session.hash_key
    session.identity_map._add_unpresent(state, key)
    # Loaded values live in the instance's __dict__; a new state has nothing to commit.
    state.dict.update(values)
    return instance


def session_is_flushing(session: Any) -> bool:
    """True while ``session`` (a sync ``Session``) flushes: the loads it runs then (a deleted
    parent's children, to update or delete them) are SQLAlchemy's own, not the application's.

    SQLAlchemy keeps it in the private ``Session._flushing``; no public attribute tells.
    """
    return bool(session._flushing)


def session_has_changes(session: sqlalchemy.orm.Session) -> bool:
    """True when ``session`` holds objects to flush (new, deleted or modified): False means
    ``flush()`` would return at once, doing nothing.

    ``Session.flush`` asks the private ``Session._is_clean``. The public ``new``, ``dirty``
    and ``deleted`` build three sets to say the same; through an ``AsyncSession``, the flush
    itself costs a greenlet (two system calls): the outbox worker asks this after every
    handler.
    """
    return not session._is_clean()


def session_holds_new(session: sqlalchemy.orm.Session) -> bool:
    """True when ``session`` holds objects added and not yet flushed.

    The public ``Session.new`` builds a set of them to say so: a Python call chain, where
    the private ``Session._new`` (a dict) answers with a truth test; asked when every unit of
    work is left.
    """
    return bool(session._new)


_LOADERS = ("_emit_lazyload", "_load_for_state")
_STRATEGIES = ("sqlalchemy/orm/strategies.py", "sqlalchemy\\orm\\strategies.py")


def sqlalchemy_loads_for_itself() -> bool:
    """True when the lazy load about to run is one SQLAlchemy makes for its own work (a
    cascade of ``session.delete``, a flush, ``immediateload``): those it exempts from
    ``lazy="raise"`` itself, with the ``PassiveFlag.NO_RAISE`` it passes its lazy loader.

    Read from the ``passive`` argument of the loader's frame (only when a lazy load happens,
    which is rare, never per statement): SQLAlchemy passes it nowhere public.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(40):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name in _LOADERS and code.co_filename.endswith(_STRATEGIES):
            passive = frame.f_locals.get("passive")
            return passive is not None and bool(passive & PassiveFlag.NO_RAISE)
        frame = frame.f_back
    return False


def may_be_a_lazy_load(local_execution_options: Mapping[str, Any]) -> bool:
    """False for most statements at the cost of one dict lookup: a lazy load passes its loader
    options in the ``_sa_orm_load_options`` execution option (SQLAlchemy's own key), which a
    query of the application's has no reason to pass. ``ORMExecuteState.lazy_loaded_from``
    then says for sure, at the price of merging the statement's options (a new dict)."""
    return "_sa_orm_load_options" in local_execution_options


def register_inserted(session: sqlalchemy.orm.Session, state: Any) -> None:
    """Make ``state``, pending in ``session`` and just inserted, persistent as a flush ends:
    its identity key set, in the identity map, its values committed, ``pending_to_persistent``
    listeners called, and noted as new in the transaction, so that a rollback makes it
    transient again (``Session.add`` of a detached instance would not note that).

    The flush's ``Session._register_persistent``, not documented.
    """
    session._register_persistent({state})


def fail_as_a_flush(session: sqlalchemy.orm.Session) -> None:
    """In an ``except`` block, leave ``session`` as a flush whose statement failed does: its
    transaction rolled back, the session refusing work until ``rollback()``, the instances it
    had just added expunged (transient again).

    ``Session._flush`` does it by rolling back its subtransaction
    (``_autobegin_t()._begin()``, ``rollback(_capture_exception=True)``), not documented.
    """
    with sqlalchemy.util.safe_reraise():
        session._autobegin_t()._begin().rollback(_capture_exception=True)
