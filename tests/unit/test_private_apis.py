"""The private parts of dependencies that asyncdal relies on still have the shape it expects.

They are used in one module per dependency (``asyncdal/engine/_asyncpg.py``, ``_asyncio.py``,
``_sqlalchemy.py``); each test here fails naming what changed, so that an upgrade that breaks
one is caught here rather than by a fallback that hides it. No server needed: fast.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import socket
import struct
import warnings
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from weakref import WeakSet

import asyncpg
import prometheus_client.metrics
import pytest
import sqlalchemy
import sqlalchemy.util
import uvloop
from asyncpg import connect_utils
from asyncpg.protocol import Protocol
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import greenlet_spawn

from asyncdal import DatabaseSettings, create_engine
from asyncdal.engine._asyncio import DependencyChanged, close_socket_of_closed_loop
from asyncdal.engine._asyncpg import CANCEL_PARAMETERS, abandon_connection, cancel_request
from asyncdal.engine._cancel import ServerCancel
from asyncdal.engine._create import TimedQueuePool
from asyncdal.engine._sqlalchemy import (
    await_in_greenlet,
    caller_frame,
    in_sqlalchemy_greenlet,
    loads_for_a_query,
    may_be_a_lazy_load,
    session_has_changes,
    session_is_flushing,
    sqlalchemy_loads_for_itself,
)
from asyncdal.orm._loop_engines import LoopEngine, LoopEngines

CANCEL_REQUEST_CODE = 80877102  # PostgreSQL's CancelRequest: (1234 << 16) | 5678

# asyncpg


def test_asyncpg_cancel_takes_the_arguments_asyncdal_passes() -> None:
    send = getattr(connect_utils, "_cancel", None)
    assert send is not None, "asyncpg.connect_utils._cancel is gone"
    assert inspect.iscoroutinefunction(send), "asyncpg.connect_utils._cancel is no longer async"
    signature = inspect.signature(send)
    keyword_only = {
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY
    }
    assert keyword_only == set(CANCEL_PARAMETERS), (
        f"asyncpg.connect_utils._cancel{signature} no longer takes {CANCEL_PARAMETERS}"
    )


def test_asyncpg_connections_keep_what_asyncdal_reads() -> None:
    slots = set(asyncpg.Connection.__slots__)
    missing = {"_protocol", "_loop", "_addr", "_params", "_transport"} - slots
    assert not missing, f"asyncpg.Connection no longer has the attributes {sorted(missing)}"
    for name in ("backend_pid", "backend_secret"):
        assert hasattr(Protocol, name), f"asyncpg's Protocol no longer has {name}"
    for name in ("terminate", "is_closed", "get_server_pid"):  # public, relied on as well
        assert callable(getattr(asyncpg.Connection, name, None)), f"Connection.{name} is gone"


def bare_connection(**attributes: Any) -> asyncpg.Connection[Any]:
    """An asyncpg Connection with only the given attributes set (no server behind it)."""
    connection: asyncpg.Connection[Any] = asyncpg.Connection.__new__(asyncpg.Connection)
    # Marked aborted so that collecting it does not warn of an unclosed connection.
    for name, value in {"_aborted": True, **attributes}.items():
        setattr(connection, name, value)
    return connection


async def test_a_cancel_request_built_from_asyncpg_reaches_the_server() -> None:
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.readexactly(16))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(server_side, "127.0.0.1", 0)
    address = server.sockets[0].getsockname()[:2]
    connection = bare_connection(
        _protocol=SimpleNamespace(
            backend_pid=4242, backend_secret=987654, get_server_pid=lambda: 4242
        ),
        _loop=asyncio.get_running_loop(),
        _addr=address,
        _params=SimpleNamespace(ssl=None, sslmode=None),
    )
    async with server:
        await cancel_request(connection)
        message = await asyncio.wait_for(received, 5)
    assert struct.unpack("!iiii", message) == (16, CANCEL_REQUEST_CODE, 4242, 987654)


def test_a_cancel_request_names_what_asyncpg_no_longer_has() -> None:
    with pytest.raises(DependencyChanged, match="_protocol"):
        cancel_request(bare_connection())


class Unbuildable:
    """Looks open to ServerCancel, but has none of asyncpg's insides."""

    def is_closed(self) -> bool:
        return False


async def test_server_cancel_logs_a_changed_asyncpg_once_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancel = ServerCancel()
    with caplog.at_level(logging.ERROR, logger="asyncdal.cancel"):
        cancel.request(Unbuildable())
        cancel.request(Unbuildable())
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "asyncpg changed" in errors[0].getMessage()


class Unterminable:
    """terminate() leaves it open: what a changed asyncpg might do."""

    def is_closed(self) -> bool:
        return False

    def terminate(self) -> None:
        pass


def test_abandoning_names_what_asyncpg_no_longer_does() -> None:
    with pytest.raises(DependencyChanged, match=r"terminate\(\) no longer marks"):
        abandon_connection(Unterminable())  # type: ignore[arg-type]


def test_abandoning_logs_a_changed_asyncpg_once_per_database(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engines = LoopEngines(
        "main",
        DatabaseSettings.model_validate({"url": "postgresql+asyncpg://u@127.0.0.1/d"}),
        {},
        lambda kind, node: None,
    )
    loop = asyncio.new_event_loop()
    loop.close()
    kept = [Unterminable(), Unterminable()]

    def bound() -> LoopEngine:
        engine = create_async_engine("postgresql+asyncpg://u@127.0.0.1/d")
        factory: Any = None
        return LoopEngine(loop, engine, factory, factory, factory, opened=WeakSet(kept))

    with caplog.at_level(logging.ERROR, logger="asyncdal.database"):
        engines.abandon(bound())
        engines.abandon(bound())
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "2 connection(s)" in errors[0].getMessage()
    assert "terminate() no longer marks" in errors[0].getMessage()


# asyncio and uvloop: the socket of a transport whose loop is closed


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    try:
        yield ours, theirs
    finally:
        ours.close()  # harmless when closed already
        theirs.close()


def transport_of_a_closed_loop(
    new_loop: Callable[[], asyncio.AbstractEventLoop], ours: socket.socket
) -> tuple[asyncio.BaseTransport, list[warnings.WarningMessage]]:
    """A transport on ``ours`` in a loop that is then closed, and what closing it warned."""
    loop = new_loop()
    transport, _ = loop.run_until_complete(loop.connect_accepted_socket(asyncio.Protocol, ours))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.close()
    return transport, caught


def test_asyncio_leaves_the_socket_of_a_closed_loop_open_and_it_is_closed_here(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = socket_pair
    transport, at_close = transport_of_a_closed_loop(asyncio.new_event_loop, ours)
    assert at_close == []
    assert transport.get_extra_info("socket").fileno() != -1, "asyncio now closes it itself"
    with pytest.raises(RuntimeError, match="closed"):
        transport.close()  # what the public API cannot do on a closed loop
    assert close_socket_of_closed_loop(transport) is True
    assert transport.get_extra_info("socket").fileno() == -1
    theirs.settimeout(5)
    assert theirs.recv(1) == b"", "the other end did not see the socket closed"
    with warnings.catch_warnings(record=True) as at_collection:
        warnings.simplefilter("always")
        del transport
        gc.collect()
    assert [str(warning.message) for warning in at_collection] == []


def test_uvloop_closes_the_sockets_of_a_loop_with_the_loop(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = socket_pair
    transport, at_close = transport_of_a_closed_loop(uvloop.new_event_loop, ours)
    # uvloop says so, when its loop is closed with transports open: before asyncdal can act.
    assert [type(warning.message) for warning in at_close] == [ResourceWarning]
    assert "unclosed resource" in str(at_close[0].message)
    theirs.settimeout(5)
    assert theirs.recv(1) == b"", "uvloop no longer closes a loop's sockets with the loop"
    assert close_socket_of_closed_loop(transport) is False  # nothing left to do


def test_asyncio_keeps_the_socket_where_asyncdal_looks() -> None:
    from asyncio import selector_events, sslproto

    assert hasattr(selector_events, "_SelectorTransport"), "asyncio's _SelectorTransport is gone"
    loop = asyncio.new_event_loop()
    try:
        protocol = sslproto.SSLProtocol(loop, asyncio.Protocol(), None, None)
        assert hasattr(protocol, "_transport"), "asyncio's SSLProtocol has no _transport"
        app_transport = protocol._get_app_transport()
        assert getattr(app_transport, "_ssl_protocol", None) is protocol, (
            "asyncio's _SSLProtocolTransport no longer keeps its protocol in _ssl_protocol"
        )
        app_transport.abort()  # nothing under it yet: only marks it closed
    finally:
        loop.close()


# SQLAlchemy


async def test_sqlalchemy_awaits_from_its_greenlets() -> None:
    assert callable(getattr(sqlalchemy.util, "await_", None)), "sqlalchemy.util.await_ is gone"

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await greenlet_spawn(lambda: await_in_greenlet(answer())) == 42


async def test_sqlalchemy_tells_whether_its_greenlet_runs_and_who_called_it() -> None:
    assert not in_sqlalchemy_greenlet()

    def inside() -> tuple[bool, str]:
        frame = caller_frame()
        assert frame is not None
        return in_sqlalchemy_greenlet(), frame.f_code.co_name

    async def application_code() -> tuple[bool, str]:
        return await greenlet_spawn(inside)

    inside_greenlet, caller = await application_code()
    assert inside_greenlet, "sqlalchemy.util.concurrency.in_greenlet no longer sees its greenlet"
    # The parent greenlet is suspended in greenlet_spawn, called by the application's code.
    assert caller == "greenlet_spawn"


def strategies_module() -> Any:
    from sqlalchemy.orm import strategies

    return strategies


def test_sqlalchemy_passes_the_query_context_to_the_loads_it_asks_for() -> None:
    from sqlalchemy.orm import context

    source = inspect.getsource(context)
    assert '"sa_top_level_orm_context"' in source, "SQLAlchemy renamed sa_top_level_orm_context"
    assert '"_sa_orm_load_options"' in inspect.getsource(strategies_module()), (
        "SQLAlchemy's lazy loader no longer passes _sa_orm_load_options"
    )
    assert may_be_a_lazy_load({"_sa_orm_load_options": object()})
    assert not may_be_a_lazy_load({})
    assert loads_for_a_query({"sa_top_level_orm_context": object()})
    assert not loads_for_a_query({})


def test_sqlalchemy_sessions_say_when_they_flush() -> None:
    from sqlalchemy import Column, Integer
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __tablename__ = "things"
        id = Column(Integer, primary_key=True)

    engine = sqlalchemy.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    seen: list[bool] = []
    with Session(engine) as session:
        event.listen(session, "before_flush", lambda s, *args: seen.append(session_is_flushing(s)))
        assert not session_is_flushing(session)
        session.add(Thing(id=1))
        session.flush()
        assert not session_is_flushing(session)
    engine.dispose()
    assert seen == [True], "Session._flushing no longer tells a flush in progress"


def test_sqlalchemy_sessions_say_when_a_flush_has_work() -> None:
    from sqlalchemy import Column, Integer, String
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __tablename__ = "things"
        id = Column(Integer, primary_key=True)
        name = Column(String)

    engine = sqlalchemy.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        assert not session_has_changes(session)
        thing = Thing(id=1, name="a")
        session.add(thing)
        assert session_has_changes(session), "Session._is_clean no longer sees a new object"
        session.flush()
        assert not session_has_changes(session)
        thing.name = "b"
        assert session_has_changes(session), "Session._is_clean no longer sees a change"
        session.flush()
        session.delete(thing)
        assert session_has_changes(session), "Session._is_clean no longer sees a deletion"
        session.flush()
        assert not session_has_changes(session)
    engine.dispose()


def test_sqlalchemy_lazy_loaders_take_the_passive_flags_asyncdal_reads() -> None:
    from sqlalchemy.orm import strategies
    from sqlalchemy.orm.base import PassiveFlag

    # SQLAlchemy 2.1 calls it _LazyLoader, 2.0 LazyLoader.
    loader = getattr(strategies, "_LazyLoader", None) or strategies.LazyLoader  # type: ignore[attr-defined]
    for name in ("_emit_lazyload", "_load_for_state"):
        parameters = inspect.signature(getattr(loader, name)).parameters
        assert "passive" in parameters, f"LazyLoader.{name} no longer takes passive"
    assert PassiveFlag.NO_RAISE
    assert not sqlalchemy_loads_for_itself()  # no loader on the stack here


def test_sqlalchemy_pool_entries_name_their_driver_connection() -> None:
    # Public API (the "connect" pool event and ConnectionPoolEntry.driver_connection), relied
    # on to find the connections of a closed loop instead of reading the pool's private queue.
    engine = sqlalchemy.create_engine("sqlite://")
    seen: list[Any] = []
    event.listen(engine, "connect", lambda dbapi, record: seen.append(record.driver_connection))
    with engine.connect() as connection:
        assert seen == [connection.connection.driver_connection]
    engine.dispose()


def test_the_pool_knows_its_overflow_without_sqlalchemy_private_attribute() -> None:
    settings = DatabaseSettings.model_validate(
        {"url": "postgresql+asyncpg://u@127.0.0.1/d", "pool_size": 3, "max_overflow": 4}
    )
    pool = create_engine(settings).sync_engine.pool
    assert isinstance(pool, TimedQueuePool)
    assert (pool.size(), pool.max_overflow) == (3, 4)
    fresh = pool.recreate()  # what dispose() and invalidation use
    assert (fresh.size(), fresh.max_overflow) == (3, 4)


def test_cursor_listeners_lists_every_statement_listener_of_an_engine() -> None:
    from asyncdal.engine._sqlalchemy import cursor_listeners

    engine = sqlalchemy.create_engine("sqlite://")
    assert cursor_listeners(engine) == []

    def before(*args: Any) -> None: ...

    def after(*args: Any) -> None: ...

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    # SQLAlchemy keeps a wrapper of a before_cursor_execute listener; the count is what counts.
    assert len(cursor_listeners(engine)) == 2
    assert after in cursor_listeners(engine)


def test_listener_snapshots_are_equal_exactly_while_the_same_listeners_listen() -> None:
    from sqlalchemy.orm import Session

    from asyncdal.engine._sqlalchemy import listeners_kept, listeners_now

    engine = sqlalchemy.create_engine("sqlite://")
    events = ("before_cursor_execute", "after_cursor_execute")

    def one(*args: Any) -> None: ...

    def two(*args: Any) -> None: ...

    kept = listeners_kept(engine.dispatch, *events)
    assert listeners_now(engine.dispatch, *events) == kept
    event.listen(engine, "after_cursor_execute", one)  # the engine's first listener
    assert listeners_now(engine.dispatch, *events) != kept
    kept = listeners_kept(engine.dispatch, *events)
    assert listeners_now(engine.dispatch, *events) == kept
    # Another function in the place of one: as many listeners, not the same.
    event.remove(engine, "after_cursor_execute", one)
    event.listen(engine, "after_cursor_execute", two)
    assert listeners_now(engine.dispatch, *events) != kept
    kept = listeners_kept(engine.dispatch, *events)
    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", one)  # the class's
    try:
        assert listeners_now(engine.dispatch, *events) != kept
    finally:
        event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", one)
    assert listeners_now(engine.dispatch, *events) == kept

    class Sessions(Session):
        pass

    session_events = ("loaded_as_persistent", "do_orm_execute")
    session = Sessions()
    classwide = listeners_now(session.dispatch, *session_events)
    kept = listeners_kept(session.dispatch, *session_events)
    event.listen(Sessions, "do_orm_execute", one)
    assert listeners_now(session.dispatch, *session_events) != kept
    # The class's collections are changed in place: those of a session taken earlier are
    # those of every session of the class, now too.
    assert listeners_now(Sessions().dispatch, *session_events) == classwide
    assert one in classwide[2]
    kept = listeners_kept(session.dispatch, *session_events)
    event.listen(session, "loaded_as_persistent", two)  # the session's own
    assert listeners_now(session.dispatch, *session_events) != kept
    # An engine with execution options has another shape: its copies equal nothing.
    options = engine.execution_options(isolation_level="AUTOCOMMIT")
    event.listen(options, "before_cursor_execute", one)
    assert listeners_now(options.dispatch, *events) != listeners_kept(options.dispatch, *events)
    engine.dispose()


def test_check_in_unused_skips_only_a_rollback_with_nothing_to_roll_back() -> None:
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
    from sqlalchemy.pool import QueuePool

    from asyncdal.engine._sqlalchemy import check_in_unused

    # The adapter's attribute asyncdal reads (None: no transaction begun).
    assert "_transaction" in AsyncAdapt_asyncpg_connection.__slots__

    class Adapter:
        """A DBAPI connection with the adapter's attribute, noting the pool's calls."""

        def __init__(self) -> None:
            self._transaction: object = None
            self.calls: list[str] = []

        def rollback(self) -> None:
            self.calls.append("rollback")

        def close(self) -> None:
            self.calls.append("close")

    pool = QueuePool(Adapter, pool_size=1, max_overflow=0)
    resets: list[bool] = []
    event.listen(
        pool, "reset", lambda dbapi, record, state: resets.append(state.transaction_was_reset)
    )
    fairy = pool.connect()
    adapter = fairy.dbapi_connection
    check_in_unused(fairy)
    assert (adapter.calls, resets, pool.checkedout()) == ([], [True], 0)
    # A transaction begun: rolled back on the way in, as usual.
    fairy = pool.connect()
    assert fairy.dbapi_connection is adapter  # the same connection, from the pool
    adapter._transaction = object()
    check_in_unused(fairy)
    assert (adapter.calls, resets, pool.checkedout()) == (["rollback"], [True, False], 0)
    # Any other DBAPI connection (no such attribute): as usual too.
    engine = sqlalchemy.create_engine("sqlite://", poolclass=QueuePool)
    rolled_back: list[bool] = []
    event.listen(
        engine,
        "reset",
        lambda dbapi, record, state: rolled_back.append(state.transaction_was_reset),
    )
    check_in_unused(engine.raw_connection())
    assert (rolled_back, engine.pool.checkedout()) == ([False], 0)
    engine.dispose()


def test_has_load_listeners_sees_a_reconstructor() -> None:
    from sqlalchemy import Column, Integer
    from sqlalchemy.orm import DeclarativeBase, reconstructor

    from asyncdal.engine._sqlalchemy import has_load_listeners

    class Base(DeclarativeBase):
        pass

    class Plain(Base):
        __tablename__ = "plain"
        id = Column(Integer, primary_key=True)

    class Rebuilt(Base):
        __tablename__ = "rebuilt"
        id = Column(Integer, primary_key=True)

        @reconstructor
        def init_on_load(self) -> None: ...

    assert not has_load_listeners(sqlalchemy.inspect(Plain))
    assert has_load_listeners(sqlalchemy.inspect(Rebuilt))


def test_add_loaded_leaves_an_instance_as_the_orms_loading_does() -> None:
    from sqlalchemy import Column, Integer, String
    from sqlalchemy.orm import DeclarativeBase, Session

    from asyncdal.engine._sqlalchemy import add_loaded

    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __tablename__ = "thing"
        id = Column(Integer, primary_key=True)
        name = Column(String)

    mapper = sqlalchemy.inspect(Thing)
    sqlalchemy.orm.configure_mappers()
    session = Session()
    key = mapper.identity_key_from_primary_key((7,))
    thing = add_loaded(session, mapper, key, [("id", 7), ("name", "seven")])
    state = sqlalchemy.inspect(thing)
    assert (thing.id, thing.name) == (7, "seven")
    assert state.persistent
    assert state.key == key
    assert session.identity_map.get(key) is thing
    assert not session.dirty
    thing.name = "eight"
    assert thing in session.dirty
    assert state.attrs.name.history.deleted == ["seven"]
    session.close()
    assert state.detached

    listened = Session()
    event.listen(listened, "loaded_as_persistent", lambda *args: None)
    with pytest.raises(ValueError, match="loaded_as_persistent"):
        add_loaded(listened, mapper, mapper.identity_key_from_primary_key((8,)), [("id", 8)])


def test_register_inserted_and_fail_as_a_flush_leave_a_session_as_the_flush_does() -> None:
    from sqlalchemy import Column, Integer, String
    from sqlalchemy.orm import DeclarativeBase, Session

    from asyncdal.engine._sqlalchemy import fail_as_a_flush, register_inserted

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = "row"
        id = Column(Integer, primary_key=True)
        name = Column(String)

    sqlalchemy.orm.configure_mappers()
    session = Session()
    seen: list[object] = []
    event.listen(session, "pending_to_persistent", lambda session, instance: seen.append(instance))
    row = Row(name="one")
    session.add(row)  # autobegins, as the connection taken for the INSERT does
    row.id = 7  # what the INSERT returned
    register_inserted(session, sqlalchemy.inspect(row))
    state = sqlalchemy.inspect(row)
    assert state.persistent
    assert session.identity_map.get(state.key) is row
    assert not session.new
    assert not session.dirty
    assert seen == [row]
    session.rollback()
    assert state.transient  # noted as new in the transaction, as a flush notes it

    other = Row(name="two")
    session.add(other)
    with pytest.raises(ZeroDivisionError):
        try:
            1 / 0  # noqa: B018 (the INSERT failing)
        except ZeroDivisionError:
            fail_as_a_flush(session)
    assert sqlalchemy.inspect(other).transient
    transaction = session.get_transaction()
    assert transaction is not None
    assert not transaction.is_active  # refusing work until rollback()
    session.rollback()
    session.close()


def test_session_holds_new_sees_objects_added_and_not_flushed() -> None:
    from sqlalchemy import Column, Integer
    from sqlalchemy.orm import DeclarativeBase, Session

    from asyncdal.engine._sqlalchemy import session_holds_new

    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __tablename__ = "thing"
        id = Column(Integer, primary_key=True)

    session = Session()
    assert not session_holds_new(session)
    thing = Thing(id=1)
    session.add(thing)
    assert session_holds_new(session)
    assert thing in session.new
    session.expunge(thing)
    assert not session_holds_new(session)


def test_own_dispatch_is_none_until_a_session_has_one() -> None:
    from sqlalchemy.orm import Session

    from asyncdal.engine._sqlalchemy import own_dispatch

    session = Session()
    assert own_dispatch(session) is None
    dispatch = session.dispatch  # made at the first read, and kept
    assert own_dispatch(session) is dispatch
    listened = Session()
    event.listen(listened, "loaded_as_persistent", lambda *args: None)
    assert own_dispatch(listened) is not None
    assert listened.dispatch.loaded_as_persistent


def test_prometheus_client_keeps_its_created_series_switch() -> None:
    from asyncdal.observe._prometheus import created_series_on

    assert created_series_on() is prometheus_client.metrics._use_created


def test_a_changed_created_series_switch_is_an_error_not_a_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asyncdal.observe._prometheus import created_series_on

    monkeypatch.delattr(prometheus_client.metrics, "_use_created")
    with pytest.raises(DependencyChanged, match="_use_created"):
        created_series_on()
