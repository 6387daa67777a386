"""``Repository.add`` of one plain new instance: its INSERT without the ORM's unit of work.

A flush of one new object spends most of its CPU deciding what to do (sorting the session's
states into a dependency graph, collecting the parameters, grouping records, bookkeeping):
measured, ``add`` and flush of one catalog ``Product`` in an open transaction cost about
670 us of CPU, its INSERT through the engine about 210 us; the catalog's product and event
write (``bench``'s data part, one task) went from about 1,740 to about 1,440 CPU us with
this. :func:`insert_one` does what that flush
does for the one object, step for step, and nothing else: it adds the instance to the session
(pending, as ``session.add`` makes it), sends the INSERT ... RETURNING the flush would send
(``table.insert().return_defaults(...)``, compiled once per set of columns by SQLAlchemy's
cache) on the session's connection through the engine (so every statement listener sees it:
the safety nets, metrics, the slow-statement log, the breaker, error translation), fills in
what came back as the flush's ``_postfetch`` does, and makes the instance persistent the way
the flush ends (``asyncdal.engine._sqlalchemy.register_inserted``): in the identity map,
clean, and made transient again if the transaction rolls back. A failed INSERT leaves the
session as a failed flush does (``fail_as_a_flush``).

When no value needs a conversion by its type on the way in or out and no default is computed
at execution, the INSERT runs on the driver connection of the session's connection, in its
transaction (``asyncdal.engine._driver.fetchrow_in_transaction``, whose statement hooks stand in
for the engine's listeners); measured, that took the catalog's product and event write from
about 1,210 to about 1,020 Python calls (with the outbox INSERT on the driver too).

It declines (returns False, and the caller flushes the usual way) whenever the flush could do
more than that: a session with other pending changes, or with flush listeners
(``before_flush``, ``after_flush``, ``after_flush_postexec``); ``before_insert`` or
``after_insert`` listeners on the mapper, ``refresh_flush`` on the class; a relationship set on
the instance; a value that is a SQL expression; a model that is not one table mapped plainly
(inheritance, a version counter, composites, a column property that is an expression, a
dataclass mapping), or with defaults only the flush computes (a Python callable, a SQL
expression or a sequence as a column default, an ``onupdate`` without a server default), or
with server defaults it would not fetch at once (``eager_defaults=False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Column, Insert, Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.exc import NO_STATE
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.sql import ClauseElement

from asyncdal.engine._driver import DECLINED, fetchrow_in_transaction
from asyncdal.engine._sqlalchemy import fail_as_a_flush, register_inserted

__all__ = ["insert_one", "insert_plan"]


@dataclass(frozen=True, slots=True)
class InsertPlan:
    """How the flush inserts an instance of one mapper, worked out once per mapper."""

    statement: Insert
    """``table.insert()``, returning the server defaults as the flush asks for them."""
    columns: tuple[tuple[str, str], ...]
    """Every mapped column: (attribute key, column key)."""
    evaluates_none: frozenset[str]
    """Attribute keys whose None is sent as a value (JSON's ``null``), not left to defaults."""
    as_none: tuple[str, ...]
    """Column keys the flush sends as NULL when they have no value: no default of any kind."""
    primary_key: tuple[tuple[str, Any], ...]
    """The primary key columns: (attribute key, column)."""
    by_column: Mapping[Any, str]
    """Attribute key by column."""
    relationships: frozenset[str]


_plans: WeakKeyDictionary[Mapper[Any], InsertPlan | None] = WeakKeyDictionary()


def insert_plan(mapper: Mapper[Any]) -> InsertPlan | None:
    """The plan for ``mapper``'s instances, or None when only the flush inserts them as it
    should (see the module's docstring)."""
    try:
        return _plans[mapper]
    except KeyError:
        plan = _plans[mapper] = _make_plan(mapper)
        return plan


def _make_plan(mapper: Mapper[Any]) -> InsertPlan | None:
    table = mapper.local_table
    if (
        not isinstance(table, Table)
        or mapper.persist_selectable is not table
        or mapper.inherits is not None
        or mapper.polymorphic_on is not None
        or mapper.version_id_col is not None
        or mapper.composites
        or dataclasses.is_dataclass(mapper.class_)
    ):
        return None
    columns: list[tuple[str, str]] = []
    by_column: dict[Any, str] = {}
    for prop in mapper.column_attrs:
        column, *more = prop.columns
        if more or not isinstance(column, Column) or column.table is not table:
            return None
        columns.append((prop.key, column.key))
        by_column[column] = prop.key
    if len(by_column) != len(table.columns):
        return None  # a column left unmapped gets what Core gives it, not what the ORM would
    server_defaults = []
    for column in table.columns:
        default = column.default
        if default is not None and not getattr(default, "is_scalar", False):
            return None  # computed by the flush (a callable, an expression, a sequence)
        if column.server_default is not None:
            server_defaults.append(column)
        elif column.onupdate is not None or column.server_onupdate is not None:
            return None  # the flush would SELECT it after the INSERT (eager_defaults=True)
    if server_defaults and not _fetches_server_defaults(mapper, table):
        return None  # the flush would expire them instead
    statement = table.insert()
    if server_defaults:
        statement = statement.return_defaults(*server_defaults, sort_by_parameter_order=True)
    as_none = tuple(
        column.key
        for column in table.columns
        if not column.primary_key
        and column.server_default is None
        and column.default is None
        and not column.type.should_evaluate_none
    )
    return InsertPlan(
        statement=statement,
        columns=tuple(columns),
        evaluates_none=frozenset(
            key for column, key in by_column.items() if column.type.should_evaluate_none
        ),
        as_none=as_none,
        primary_key=tuple((by_column[column], column) for column in mapper.primary_key),
        by_column=by_column,
        relationships=frozenset(prop.key for prop in mapper.relationships),
    )


def _fetches_server_defaults(mapper: Mapper[Any], table: Table) -> bool:
    """True when the flush fetches server defaults with the INSERT (RETURNING) on PostgreSQL:
    ``eager_defaults`` True, or ``"auto"`` (the default) with ``implicit_returning``."""
    eager = mapper.base_mapper.eager_defaults
    return eager is True or (eager == "auto" and table.implicit_returning)


async def insert_one(session: AsyncSession, obj: Any) -> bool:
    """Insert ``obj`` as a flush of it alone would, and leave it persistent in ``session``.

    Returns:
        False, having done nothing, when the usual ``add`` and flush must do it.
    """
    try:
        state = instance_state(obj)
    except NO_STATE:
        return False  # not a mapped instance: session.add says so, as it always did
    plan = insert_plan(state.mapper)
    if plan is None:
        return False
    return bool(await session.run_sync(_insert, state, plan))


def _insert(session: Session, state: InstanceState[Any], plan: InsertPlan) -> bool:
    dispatch = session.dispatch
    transaction = session.get_transaction()
    if (
        (transaction is not None and not transaction.is_active)
        or dispatch.before_flush
        or dispatch.after_flush
        or dispatch.after_flush_postexec
        or state.key is not None
        or state.session_id is not None
        or state.manager.dispatch.refresh_flush
        or state.mapper.dispatch.before_insert
        or state.mapper.dispatch.after_insert
        or session.new
        or session.deleted
        or session.dirty
    ):
        return False
    values = state.dict
    if not plan.relationships.isdisjoint(values):
        return False  # the flush would cascade, or set a foreign key from it
    parameters = _parameters(plan, values)
    if parameters is None:
        return False
    obj = state.obj()
    mapper = state.mapper
    session.add(obj)
    try:
        connection = session.connection(bind_arguments={"mapper": mapper})
        if not _on_driver(connection, plan, state, values, parameters):
            result = connection.execute(plan.statement, parameters)
            _fill_in(plan, state, values, result)
        register_inserted(session, state)
    except BaseException:
        fail_as_a_flush(session)
        raise
    return True


def _parameters(plan: InsertPlan, values: dict[str, Any]) -> dict[str, Any] | None:
    """The INSERT's parameters as the flush collects them (``_collect_insert_commands``), or
    None when a value is a SQL expression (the flush renders those inline)."""
    parameters: dict[str, Any] = {}
    evaluates_none = plan.evaluates_none
    for key, column_key in plan.columns:
        if key not in values:
            continue
        value = values[key]
        if value is None and key not in evaluates_none:
            continue  # left to the column's defaults, as the flush does
        if isinstance(value, ClauseElement) or hasattr(value, "__clause_element__"):
            return None
        parameters[column_key] = value
    for column_key in plan.as_none:
        parameters.setdefault(column_key, None)
    return parameters


def _fill_in(
    plan: InsertPlan, state: InstanceState[Any], values: dict[str, Any], result: Any
) -> None:
    """Put what the INSERT made into the instance, as the flush's ``_postfetch`` does: the new
    primary key, the server defaults it returned, the Python defaults it computed."""
    for (key, _), value in zip(plan.primary_key, result.inserted_primary_key, strict=True):
        if values.get(key) is None:
            values[key] = value
    by_column = plan.by_column
    returned = result.returned_defaults
    if returned is not None:
        for value, column in zip(
            returned, result.context.compiled.effective_returning, strict=True
        ):
            if not column.primary_key and column in by_column:
                values[by_column[column]] = value
    sent = result.context.compiled_parameters[0]
    committed = state.committed_state
    for column in result.prefetch_cols():
        if column.key in sent and column in by_column:
            key = by_column[column]
            values[key] = sent[column.key]
            committed.pop(key, None)
    postfetch = [by_column[column] for column in result.postfetch_cols() if column in by_column]
    if postfetch:
        # Not expected with a plan (server defaults are fetched): expired as the flush would.
        for key in postfetch:
            values.pop(key, None)
        state.expired_attributes.update(postfetch)


@dataclass(frozen=True, slots=True)
class _DriverInsert:
    """The INSERT of one set of columns, compiled for one dialect, to run on the driver."""

    sql: str
    names: tuple[str, ...]
    """The parameters' keys, in the order the SQL takes them."""
    returning: tuple[tuple[str, bool], ...]
    """What each returned column fills in: (attribute key, whether it is a primary key)."""


# By dialect, then by (the plan's statement, columns sent); None where the engine runs it.
_driver_inserts: WeakKeyDictionary[
    Dialect, dict[tuple[Insert, frozenset[str]], _DriverInsert | None]
] = WeakKeyDictionary()


def _on_driver(
    connection: Connection,
    plan: InsertPlan,
    state: InstanceState[Any],
    values: dict[str, Any],
    parameters: dict[str, Any],
) -> bool:
    """Run the INSERT on the session's driver connection (``asyncdal.engine._driver``) and fill
    in what it returned, as :func:`_fill_in` does from the engine's result; False, having sent
    nothing, when it must run through the engine. Skips SQLAlchemy's Core execution, measured
    the larger part of the INSERT's CPU."""
    dialect = connection.dialect
    by_key = _driver_inserts.get(dialect)
    if by_key is None:
        by_key = _driver_inserts[dialect] = {}
    key = (plan.statement, frozenset(parameters))
    try:
        insert = by_key[key]
    except KeyError:
        insert = by_key[key] = _driver_insert(plan, dialect, parameters)
    if insert is None:
        return False
    row = fetchrow_in_transaction(
        connection, insert.sql, [parameters[name] for name in insert.names], kind="insert"
    )
    if row is DECLINED:
        return False
    if insert.returning:  # else no RETURNING, and no row
        for (attribute, primary_key), value in zip(insert.returning, row, strict=True):
            if not primary_key or values.get(attribute) is None:
                values[attribute] = value
    return True


def _driver_insert(
    plan: InsertPlan, dialect: Dialect, parameters: dict[str, Any]
) -> _DriverInsert | None:
    """The INSERT of ``parameters``' columns compiled as the engine compiles it, or None when
    running it takes more than sending its parameters and reading its row: a type that
    converts a value on the way in or out, a default computed at execution, a parameter under
    another name."""
    compiled = plan.statement.compile(dialect=dialect, column_keys=list(parameters))
    names = tuple(compiled.positiontup or ())
    if (
        set(names) != set(parameters)
        or compiled.insert_prefetch
        or compiled.postfetch
        or compiled.literal_execute_params
        or compiled.post_compile_params
    ):
        return None
    for name in names:
        if compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) is not None:
            return None
    returning = []
    for column in compiled.effective_returning or ():
        attribute = plan.by_column.get(column)
        if attribute is None:
            return None
        try:
            # Without the column's type OID: a type whose conversion depends on it says so.
            processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
        except Exception:
            return None
        if processor is not None:
            return None
        returning.append((attribute, bool(column.primary_key)))
    return _DriverInsert(str(compiled), names, tuple(returning))
