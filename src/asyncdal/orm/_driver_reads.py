"""Repository reads on the default read-only path, run on the driver (see
:mod:`asyncdal.engine._driver`), handing back real ORM instances in the session.

A repository's ``get``, ``count`` and ``list`` (without filters, cursor or loader options)
compile their statement once per database and model; the rows come from the asyncpg
connection, and each becomes an instance the way the ORM's own loading makes one, persistent,
clean and in the session's identity map (``asyncdal.engine._sqlalchemy.add_loaded``; measured,
``bench``'s data part: the catalog's ``get`` on the read-only path went from about 480 to
about 250 CPU us).

Only models this rebuilds exactly: mapped to one table, every attribute a plain column, no
inheritance, no eager relationships, no ``load``/``refresh`` listeners (``@reconstructor``).
Anything else, a session that already holds a connection, or a read the driver path declines
(``DriverReads.fetch``) runs the usual way.

On a database with replicas the session's router picks the node first, as for any read of the
session (:class:`RoutedReads`): the read runs on that node's driver, and one that declines (a
connection that dropped) runs the usual way on the same node, where a node that is down is
taken out and the read retried on another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Column, Select, Table, bindparam, func, inspect, literal, select
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session, configure_mappers

from asyncdal.engine._driver import DriverReads
from asyncdal.engine._sqlalchemy import (
    add_loaded,
    has_load_listeners,
    listeners_kept,
    listeners_now,
    own_dispatch,
)
from asyncdal.orm._ordering import order_clauses

__all__ = [
    "DECLINED",
    "DRIVER_READS",
    "ORM_READ",
    "RoutedReads",
    "count_rows",
    "driver_reads",
    "get_by_key",
    "list_rows",
]

DRIVER_READS = "asyncdal.driver_reads"
"""``Session.info`` key of the quick read sessions: their :class:`DriverReads`, or with
replicas their :class:`RoutedReads`."""
ORM_READ = "asyncdal.orm_read"
"""``Session.info`` key set by the quick read sessions once a statement ran the usual way
(their connection is then held until the session closes: later reads use it too)."""
DECLINED: Any = object()
"""What the functions here return when the read must run the usual way."""

# Keys that name a composite primary key: the ORM's get takes them.
_COMPOSITE_KEYS = (tuple, list, dict)
# The session events whose listeners a read on the driver would skip.
_SESSION_EVENTS = ("loaded_as_persistent", "do_orm_execute")
# Relationship loaders that load nothing with the instance: one built here behaves as the
# ORM's own (a lazy load, or the error "raise" asks for, on first access).
_LAZY = frozenset({"select", "raise", "raise_on_sql"})


@dataclass(slots=True)
class _Plan:
    """A compiled statement and how to turn its rows into instances."""

    sql: str
    parameters: list[str]
    """The bound parameters' names, in the order the SQL takes them."""
    mapper: Mapper[Any] | None
    """None for a statement of one scalar."""
    types: list[Any]
    processors: list[Callable[[Any], Any] | None] | None = None
    """Per column, the type's conversion of the driver's value; learnt on first use."""
    keys: list[str] = field(default_factory=list)
    """The attributes the model's columns load into, in the order the SQL selects them (a
    column the statement adds after them, a count, is not one)."""
    key_index: int = 0
    """Where the primary key is among :attr:`keys`."""


# What a routing session is asked to bind for a read on the driver: a plain SELECT, as
# the repository's own statements are.
_A_READ = select(literal(1))


class RoutedReads:
    """The :class:`DriverReads` of each node of a database with replicas, by the sync engine
    its routing session binds reads to (the primary's and each replica's quick engine).

    Args:
        by_engine: each node's reads, by that engine.
    """

    __slots__ = ("by_engine",)

    def __init__(self, by_engine: dict[Engine, DriverReads]) -> None:
        self.by_engine = by_engine

    def for_session(self, session: Session) -> DriverReads | None:
        """The reads of the node ``session`` reads on: its router picks one as for any read
        (the read-your-writes position, the overrides, the nodes up and caught up) and the
        session keeps it, so a read that then runs the usual way goes to the same node."""
        bind = session.get_bind(clause=_A_READ)
        return self.by_engine.get(bind) if isinstance(bind, Engine) else None


def driver_reads(session: AsyncSession) -> DriverReads | None:
    """The session's :class:`DriverReads` (of the node its router picks, with replicas),
    when it has them and has not run a statement the usual way (whose connection it holds:
    later reads use it rather than a second one)."""
    info = session.info
    reads = info.get(DRIVER_READS)
    if reads is None or ORM_READ in info:
        return None
    if type(reads) is RoutedReads:
        reads = reads.for_session(session.sync_session)
        if reads is None:
            return None
    assert isinstance(reads, DriverReads)
    return reads if _harmless(reads, session.sync_session) else None


def _harmless(reads: DriverReads, session: Session) -> bool:
    """True when no listener of ``session`` would be skipped by a read on the driver (none
    for ``loaded_as_persistent``, only asyncdal's for ``do_orm_execute``).

    Every read asks: the listeners are looked at only when they changed since they were last
    found harmless. A session with no dispatch of its own (no listener of its own) is judged
    by its class's, without making it one: a session's dispatch costs a chain of Python
    calls, most of what this check cost per request before (measured, the catalog's GET).
    """
    dispatch = own_dispatch(session)
    checked = reads.sessions_checked
    if dispatch is None:
        known = reads.session_class_listeners
        if (
            known is not None
            and known[0] is type(session)
            and checked is not None
            and checked == known[1]
        ):
            return True
        dispatch = session.dispatch
    now = listeners_now(dispatch, *_SESSION_EVENTS)
    if checked is not None and checked == now:
        return True
    if dispatch.loaded_as_persistent or not _only_asyncdal_listens(dispatch.do_orm_execute):
        return False
    reads.sessions_checked = listeners_kept(dispatch, *_SESSION_EVENTS)
    if now[1] == () and now[3] == ():
        # No listener of its own: these are its class's collections, changed in place.
        reads.session_class_listeners = (type(session), now)
    return True


def _only_asyncdal_listens(listeners: Any) -> bool:
    """True when every ``do_orm_execute`` listener is asyncdal's own: the application's may
    change the statement (``with_loader_criteria`` for a tenant, soft deletes) or answer it
    from a cache, and a read on the driver would silently skip them."""
    return all(
        getattr(listener, "__module__", "").startswith("asyncdal.") for listener in listeners
    )


def _buildable(mapper: Mapper[Any]) -> bool:
    """True when instances of ``mapper`` can be built from one row of its table."""
    table = mapper.local_table
    if (
        not isinstance(table, Table)
        or mapper.persist_selectable is not table
        or mapper.inherits is not None
        or mapper.polymorphic_on is not None
        or len(mapper.primary_key) != 1
        or has_load_listeners(mapper)
        or any(relationship.lazy not in _LAZY for relationship in mapper.relationships)
    ):
        return False
    for prop in mapper.column_attrs:
        column, *more = prop.columns
        if more or prop.deferred or not isinstance(column, Column) or column.table is not table:
            return False
    return True


def _plan(
    reads: DriverReads,
    key: Any,
    model: type[Any],
    build: Callable[[Any], Select[Any]],
    *,
    scalar: bool = False,
) -> _Plan | None:
    """The plan cached under ``key``, compiled from ``build(columns)`` on first use; None when
    ``model``'s instances cannot be built here."""
    plan = reads.plans.get(key, DECLINED)
    if plan is DECLINED:
        # Instances are made without a query to set up the mappers first.
        configure_mappers()
        mapper = inspect(model)
        plan = None
        if _buildable(mapper):
            columns = [prop.columns[0] for prop in mapper.column_attrs]
            statement = build(columns)
            compiled = statement.compile(dialect=reads.dialect)
            sql, names = str(compiled), list(compiled.positiontup or ())
            if scalar:
                plan = _Plan(sql, names, None, [statement.selected_columns[0].type])
            else:
                (key_column,) = mapper.primary_key
                plan = _Plan(
                    sql,
                    names,
                    mapper,
                    [column.type for column in statement.selected_columns],
                    keys=[prop.key for prop in mapper.column_attrs],
                    key_index=next(i for i, c in enumerate(columns) if c is key_column),
                )
        reads.plans[key] = plan
    return plan  # type: ignore[no-any-return]


async def _rows(reads: DriverReads, plan: _Plan, parameters: dict[str, Any]) -> list[Any] | None:
    fetched = await reads.fetch(
        plan.sql,
        [parameters[name] for name in plan.parameters],
        describe=plan.processors is None,
    )
    if fetched is None:
        return None
    rows, oids = fetched
    if oids is not None:
        _learn(reads, plan, oids)
    return rows


def _learn(reads: DriverReads, plan: _Plan, oids: list[int]) -> None:
    """Learn ``plan``'s conversions from its columns' type OIDs: some types convert the
    driver's value depending on the column's type on the server (asyncpg's numeric); once
    per statement, as SQLAlchemy does."""
    dialect = reads.dialect
    plan.processors = [
        kind.dialect_impl(dialect).result_processor(dialect, oid)
        for kind, oid in zip(plan.types, oids, strict=True)
    ]


def _converted(plan: _Plan, rows: list[Any]) -> list[list[Any]]:
    """Each row's values as the column types convert them (the driver's own where a type does
    not)."""
    processors = plan.processors
    assert processors is not None
    if not any(processors):
        return [list(row) for row in rows]
    return [
        [
            value if process is None else process(value)
            for process, value in zip(processors, row, strict=True)
        ]
        for row in rows
    ]


def _instances(
    reads: DriverReads, session: AsyncSession, plan: _Plan, rows: list[list[Any]]
) -> list[Any] | None:
    """The instances of ``rows``: the session's own when it has one of them already; None
    when the session got a listener the ORM's loading would call while the rows were read."""
    mapper = plan.mapper
    assert mapper is not None
    keys, key_index = plan.keys, plan.key_index
    sync_session = session.sync_session
    if not _harmless(reads, sync_session):
        return None
    identity_map = sync_session.identity_map
    identity_key = mapper.identity_key_from_primary_key
    found = []
    for values in rows:
        key = identity_key((values[key_index],))
        existing = identity_map.get(key)
        if existing is None:
            # zip stops at the model's columns: a count selected after them is not loaded.
            existing = add_loaded(
                sync_session,
                mapper,
                key,
                zip(keys, values, strict=False),
                listeners_checked=True,
            )
        found.append(existing)
    return found


def _dicts(plan: _Plan, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """``rows`` as plain dicts of the model's attributes (no count)."""
    keys = plan.keys
    return [dict(zip(keys, values, strict=False)) for values in rows]


def _build_get(model: type[Any], columns: list[Any]) -> Select[Any]:
    (key,) = inspect(model).primary_key
    return select(*columns).where(key == bindparam("ident"))


async def get_by_key(
    reads: DriverReads, session: AsyncSession, model: type[Any], ident: Any
) -> Any:
    """The instance of ``model`` with primary key ``ident`` or None; or :data:`DECLINED`.

    The catalog's read path: written out rather than through the helpers the list shares
    (one row, one parameter), each Python call fewer being measurable per request.
    """
    plan = reads.plans.get(model, DECLINED)  # the plans of gets are kept by model
    if plan is DECLINED:
        plan = _plan(reads, model, model, partial(_build_get, model))
    if plan is None or plan.mapper is None or isinstance(ident, _COMPOSITE_KEYS):
        return DECLINED
    identity_map = session.sync_session.identity_map
    key = plan.mapper.identity_key_from_primary_key((ident,))
    if identity_map.get(key) is not None:
        return DECLINED  # the session's own instance: session.get hands it over
    fetched = await reads.fetch(plan.sql, [ident], describe=plan.processors is None)
    if fetched is None:
        return DECLINED
    rows, oids = fetched
    if oids is not None:
        _learn(reads, plan, oids)
    if not rows:
        return None
    (row,) = rows
    processors = plan.processors
    assert processors is not None
    values = (
        list(row)
        if not any(processors)
        else [
            value if process is None else process(value)
            for process, value in zip(processors, row, strict=True)
        ]
    )
    sync_session = session.sync_session
    if not _harmless(reads, sync_session):
        return DECLINED  # a listener came while the row was read: the ORM's loading calls it
    if values[plan.key_index] != ident:
        # The server's value of the key (a type that normalizes it): the row's identity.
        key = plan.mapper.identity_key_from_primary_key((values[plan.key_index],))
    existing = sync_session.identity_map.get(key)
    if existing is not None:
        return existing
    return add_loaded(
        sync_session, plan.mapper, key, zip(plan.keys, values, strict=True), listeners_checked=True
    )


async def count_rows(reads: DriverReads, model: type[Any]) -> Any:
    """How many rows ``model``'s table has; or :data:`DECLINED`."""

    def build(columns: list[Any]) -> Select[Any]:
        return select(func.count()).select_from(model)

    plan = _plan(reads, ("count", model), model, build, scalar=True)
    if plan is None:
        return DECLINED
    rows = await _rows(reads, plan, {})
    if rows is None:
        return DECLINED
    return int(rows[0][0] or 0)


async def list_rows(
    reads: DriverReads,
    session: AsyncSession,
    model: type[Any],
    keys: tuple[Any, ...],
    limit: int,
    offset: int,
    *,
    count: bool = False,
    as_dicts: bool = False,
) -> Any:
    """A page of ``model`` in the order of ``keys`` (no filters), and with ``count`` how many
    rows the table has (None without); or :data:`DECLINED`.

    The page is instances, or with ``as_dicts`` plain dicts of the model's attributes. The
    count rides along as a scalar subquery (one statement, one checkout); only a page past
    the end costs a second statement for it.
    """

    def build(columns: list[Any]) -> Select[Any]:
        statement = select(*columns)
        if count:
            statement = statement.add_columns(
                select(func.count()).select_from(model).scalar_subquery()
            )
        return (
            statement.order_by(*order_clauses(model, keys))
            .limit(bindparam("limit"))
            .offset(bindparam("offset"))
        )

    plan = _plan(reads, ("list", model, keys, count), model, build)
    if plan is None or plan.mapper is None:
        return DECLINED
    rows = await _rows(reads, plan, {"limit": limit, "offset": offset})
    if rows is None:
        return DECLINED
    total: int | None = None
    if count:
        if rows:
            total = int(rows[0][-1])
        elif offset == 0:
            total = 0
        else:
            # Past the end: no row brought the count along.
            counted = await count_rows(reads, model)
            if counted is DECLINED:
                return DECLINED
            total = int(counted)
    values = _converted(plan, rows)
    items = _dicts(plan, values) if as_dicts else _instances(reads, session, plan, values)
    if items is None:
        return DECLINED
    return items, total
