"""The safety nets that watch a database's engines: statements counted, connections held too
long or idle while held, and the deadline of each statement.

One :class:`SafetyNets` per database (its ``LoopEngines`` owns it) attaches listeners to each of
its engines, only those its settings switch on, plus one cheap statement counter for
``asyncdal.testing.assert_max_queries``:

- **Leaks** (``LEAK_DETECTION_SECONDS``): at checkout the innermost frames of the code that
  took the connection are noted, code objects and instruction offsets only (a deeper walk, or
  formatting, cost more than the rest of a short read; a suspended coroutine's frame no longer
  leads to its caller, so they cannot be walked later). One timer per database, not one per
  checkout, finds the connections out longer than the threshold (they come first, in checkout
  order) and reports each once as a WARNING on ``asyncdal.leaks``, formatting the stack then.
- **Idle holds** (``IDLE_HOLD_SECONDS``): a connection that waits longer than that between
  statements (or between its last statement and its return) is reported once per checkout:
  its holder did other work (an HTTP call) while keeping the connection, and its transaction.
- **Deadlines**: see :mod:`asyncdal.engine._deadline`. In a transaction, each statement is
  also bounded on the server by ``statement_timeout``, set for the transaction from the time
  left (:class:`TransactionTimeouts`).
- **Queries per request** (``MAX_QUERIES_PER_REQUEST``): each statement is counted, by text,
  in the request's :class:`~asyncdal.engine._scope.RequestScope`.

Reads run on the driver (:mod:`asyncdal.engine._driver`) get the same bookkeeping from stand-ins
registered in the engine's statement hooks, so those reads keep their fast path with the nets
attached: the statement log, the count, the hold's statement time, and the deadline (the time
left checked before the statement, a cancel of it on the server when the time runs out, and
the deadline's error for the statement the server cancelled).
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal._request_id import current_request_id
from asyncdal._translate import translate
from asyncdal.engine._cancel import ServerCancel
from asyncdal.engine._create import statement_timeout_ms
from asyncdal.engine._deadline import DEADLINE, Deadline
from asyncdal.engine._driver import StartHook, statement_hooks
from asyncdal.engine._scope import REQUEST_SCOPE, STATEMENT_LOG, RequestScope
from asyncdal.engine._sqlalchemy import await_in_greenlet, caller_frame, in_sqlalchemy_greenlet
from asyncdal.errors import DeadlineExceededError, StatementTimeoutError
from asyncdal.settings import DatabaseSettings

__all__ = ["Hold", "HoldListener", "Holder", "SafetyNets", "TransactionTimeouts"]

leak_logger = logging.getLogger("asyncdal.leaks")

_HOLD = "asyncdal_hold"
_DEADLINE = "asyncdal_deadline"
_WATCH = "asyncdal_deadline_watch"
_TIMEOUT = "asyncdal_deadline_timeout"
# One fixed text with a parameter, as the request tags do: the driver prepares it once per
# connection (SET takes no parameters; a text per value would crowd the statement cache).
_SET_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"
# The application's own SET of statement_timeout (in milliseconds, PostgreSQL's default unit);
# one in other units is not read, and leaves the value in force unknown.
_SETS_TIMEOUT = re.compile(
    r"\s*SET\s+(?:LOCAL\s+|SESSION\s+)?statement_timeout\s*(?:=|TO)\s*'?(\d+)(?:ms)?'?\s*;?\s*$",
    re.IGNORECASE,
)
# How far past the deadline (as a share of its budget) the statement_timeout in force may reach
# before it is set again: see TransactionTimeouts.bound.
_OVERSHOOT = 0.1
# The server's statement_timeout, set from the time left rounded up, never stops a statement
# before the deadline; this much is allowed for the two clocks.
_CLOCKS = 0.002
# The innermost frames: SQLAlchemy's few, then the application's code that took the connection
# (its repository, its route), not the web framework's and server's below it.
_MAX_FRAMES = 8
_FRAMES = range(_MAX_FRAMES)

HoldListener = Callable[[str, str, float], None]
"""Told ``(node, route, seconds held)`` when a connection is returned."""


@dataclass(slots=True, eq=False)
class Hold:
    """One checkout of a connection, while it lasts (times on ``time.monotonic()``'s clock,
    a deadline's: a statement's start reads it once for both)."""

    database: str
    node: str
    started: float
    scope: RequestScope | None
    task: asyncio.Task[Any] | None
    request_id: str | None
    frames: list[Any]
    """The innermost frames of the code that checked the connection out, innermost first:
    each frame's code object followed by its instruction offset."""
    statement_seconds: float = 0.0
    statement_started: float | None = None
    last_end: float = 0.0
    checkout_stack: str = ""
    leak_reported: bool = False
    idle_reported: bool = False

    @property
    def owner(self) -> str:
        """The request's method and route template, else the task's name."""
        if self.scope is not None:
            return f"{self.scope.method} {self.scope.route}".strip()
        return "-" if self.task is None else f"task {self.task.get_name()}"

    def stack(self) -> str:
        """Where the connection was checked out (the latest call last), without SQLAlchemy's,
        asyncio's and greenlet's own frames."""
        entries = []
        frames = self.frames
        for index in range(len(frames) - 2, -1, -2):
            code: CodeType = frames[index]
            offset: int = frames[index + 1]
            if _is_machinery(code.co_filename):
                continue
            line = _line_of(code, offset)
            entries.append(
                (code.co_filename, line, code.co_name, linecache.getline(code.co_filename, line))
            )
        return "".join(traceback.StackSummary.from_list(entries).format())


@dataclass(frozen=True, slots=True)
class Holder:
    """A connection checked out now, as ``/health/ready`` and ``asyncdal holders`` show it."""

    database: str
    node: str
    owner: str
    """The request's method and route template, else the task's name."""
    request_id: str | None
    held_seconds: float
    statement_seconds: float
    """Of the time held, how much went into statements."""


def _capture_frames() -> list[Any]:
    # Flat (code, offset, code, offset, ...), appended with frames.append rather than a bound
    # ``add``: Python 3.11 specializes the method call for lists, not the call of a bound
    # method; with no tuple per frame, and a loop over a range rather than a countdown.
    # Measured (valgrind, 8 frames of a deeper stack): 7,000 instructions beyond the walk's
    # first frame, where tuples, ``add`` and the countdown cost 9,400.
    frames: list[Any] = []
    frame: FrameType | None = caller_frame()
    for _ in _FRAMES:
        if frame is None:
            break
        # The instruction offset, not f_lineno: that decodes the code's line table, which
        # for the long functions of a web framework costs more than the whole walk.
        frames.append(frame.f_code)
        frames.append(frame.f_lasti)
        frame = frame.f_back
    return frames


def _line_of(code: CodeType, offset: int) -> int:
    """The line of the instruction at ``offset`` in ``code`` (what ``f_lineno`` said then)."""
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def _is_machinery(filename: str) -> bool:
    return any(part in filename for part in ("/sqlalchemy/", "/asyncio/", "/greenlet/"))


class _Watch:
    """What cancels the statement running on one pooled connection when its deadline runs
    out; one per connection, kept in its info (not a closure per statement)."""

    __slots__ = ("_cancel", "driver_connection", "fired", "sending", "server_bounded")

    def __init__(self, cancel: ServerCancel, driver_connection: Any) -> None:
        self._cancel = cancel
        self.driver_connection = driver_connection
        self.fired: Deadline | None = None
        """The deadline that ran out while the statement running now ran."""
        self.server_bounded = False
        """The ``statement_timeout`` in force stops the statement running now at the deadline."""
        self.sending: asyncio.Task[None] | None = None
        """The cancel request on its way to the server, if one was sent."""

    def __call__(self, budget: Deadline) -> None:
        self.fired = budget
        # The server stops this statement by itself at the deadline: a cancel request sent as
        # well races that stop, and may reach the backend only once it runs the next command
        # (the unit of work's ROLLBACK), which it would then cancel instead (seen on a busy
        # machine: the rollback failed and the connection was discarded). The deadline's
        # grace timer still cancels the task should the server not stop it.
        if not self.server_bounded:
            self.sending = self._cancel.request(self.driver_connection)

    def let_cancel_land(self) -> None:
        """Before the connection runs anything more: wait until the server has the cancel
        request sent for the statement that just ended, if one is still on its way.

        The statement may have ended before the request reached the server (it finished
        just then, or the request was slow to go out on a busy machine): the server then
        ignores a cancel that finds the connection idle, but would cancel whatever the
        connection runs after it, the next statement of this transaction or of another
        request (seen with a cancel held back in the test). Runs in SQLAlchemy's greenlet,
        only for a statement under a deadline that ran out.
        """
        sending = self.sending
        self.sending = None
        if sending is not None and not sending.done() and in_sqlalchemy_greenlet():
            await_in_greenlet(asyncio.shield(sending))


@dataclass(slots=True, eq=False)
class _InForce:
    """What ``statement_timeout`` is in one transaction of a connection, as far as known."""

    transaction: object
    """SQLAlchemy's transaction it holds for (kept, not its id: an id comes back)."""
    ms: int | None
    """The value in force; None when unknown or no limit."""
    cap: int | None
    """The application's own limit (``STATEMENT_TIMEOUT``, or its own SET in the
    transaction): a deadline may tighten it, never loosen it."""


class TransactionTimeouts:
    """``SET LOCAL statement_timeout`` from the time left, before each statement of a
    transaction under a deadline, so that the server stops the statement by itself at the
    deadline: the client's cancel request (:mod:`asyncdal.engine._deadline`) needs the client
    alive and able to reach the server, this does not. Set with ``set_config(..., true)``,
    which is ``SET LOCAL``: it ends with the transaction, so the connection goes back to the
    pool with its own value, and a transaction-mode pooler never hands it to someone else.

    Statements in autocommit mode (a read-only unit of work) have no transaction for it to
    live in: the cancel alone bounds those.

    Args:
        configured_ms: ``STATEMENT_TIMEOUT`` in milliseconds, or None.
        pooler: behind a transaction-mode pooler (the value in force at the start of a
            transaction is then whatever the server's default is, until the session's
            ``SET LOCAL`` of ``STATEMENT_TIMEOUT`` runs).
    """

    __slots__ = ("_cap", "_initial")

    def __init__(self, configured_ms: int | None, *, pooler: bool) -> None:
        self._cap = configured_ms
        self._initial = None if pooler else configured_ms

    def bound(self, conn: Any, statement: str, budget: Deadline) -> bool:
        """Before ``statement`` runs on ``conn`` (a SQLAlchemy ``Connection``) under
        ``budget``: set ``statement_timeout`` for its transaction when needed.

        Returns:
            Whether the ``statement_timeout`` in force stops the statement at the deadline
            (or before it) by itself.
        """
        dbapi_connection = conn.connection.dbapi_connection
        if dbapi_connection is None or dbapi_connection.autocommit:
            return False
        info = conn.info
        transaction = conn.get_transaction()
        state: _InForce | None = info.get(_TIMEOUT)
        if state is None or state.transaction is not transaction:
            # The pooled connection's info outlives the transaction; SET LOCAL did not.
            state = info[_TIMEOUT] = _InForce(transaction, self._initial, self._cap)
        head = statement.lstrip()[:11].upper()
        if head.startswith("SET"):
            # Runs at once, needs no bound; and it may be the application setting the value.
            if "statement_timeout" in statement.lower():
                found = _SETS_TIMEOUT.match(statement)
                state.ms = (int(found[1]) or None) if found else None
                if found:
                    state.cap = state.ms
            return False
        if head == "ROLLBACK TO":
            # Undoes the SETs made since the savepoint: which value is back is not known.
            state.ms = None
            return False
        target = math.ceil(budget.remaining() * 1000)  # more than 0: begin() checked
        cap = state.cap
        if cap is not None and cap < target:
            target = cap
        current = state.ms
        # The value set for an earlier statement lets this one run that long from its own
        # start: past the deadline by the time gone since. Setting it again before every
        # statement would double a transaction's round trips, so it is set again only once it
        # reaches past the deadline by more than a tenth of the budget (or falls short of the
        # time left: an inner deadline's value, under an outer one). At the deadline itself
        # the cancel request stops the statement anyway; this bounds it when that cannot.
        if current is not None and target <= current <= target + budget.seconds * (
            _OVERSHOOT * 1000
        ):
            # At the deadline only when within the rounding of the time left.
            return current <= target + 1
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            # A failure here (the deadline's cancel, a dropped connection) is this
            # statement's, handled as one.
            cursor.execute(_SET_TIMEOUT, (str(target),))
        finally:
            cursor.close()
        state.ms = target
        return True


@dataclass(slots=True, eq=False)
class SafetyNets:
    """The safety nets of one database, shared by the engines of every event loop.

    Args:
        database: the database's name.
        settings: its settings (the ``safety`` group).

    Attributes:
        holds: the connections checked out now (when leak or idle-hold detection is on), by
            their pool entry (hashed by identity: no ``id()`` call per checkout and checkin).
        hold_listeners: told ``(node, route, seconds)`` at each return of a connection (the
            hold-time metric).
    """

    database: str
    settings: DatabaseSettings
    holds: dict[object, Hold] = field(default_factory=dict)
    hold_listeners: list[HoldListener] = field(default_factory=list)
    _cancel: ServerCancel = field(default_factory=ServerCancel)
    _sweep_timer: asyncio.TimerHandle | None = None

    @property
    def tracks_holds(self) -> bool:
        """Whether checkouts are followed (leak or idle-hold detection is on)."""
        safety = self.settings.safety
        return safety.leak_detection_seconds is not None or safety.idle_hold_seconds is not None

    def holders(self, limit: int = 5) -> list[Holder]:
        """The connections held longest now, longest first."""
        now = time.monotonic()
        longest = sorted(self.holds.values(), key=lambda hold: hold.started)[:limit]
        return [
            Holder(
                database=hold.database,
                node=hold.node,
                owner=hold.owner,
                request_id=hold.request_id,
                held_seconds=round(now - hold.started, 3),
                statement_seconds=round(hold.statement_seconds, 3),
            )
            for hold in longest
        ]

    def attach(self, engine: AsyncEngine, node: str = "primary") -> None:
        """Attach the listeners the settings call for to ``engine`` (``node``: ``primary``,
        ``replica-<n>``)."""
        sync_engine = engine.sync_engine
        database = self.database
        limit = self.settings.safety.max_queries_per_request
        idle = self.settings.safety.idle_hold_seconds
        tracks_holds = self.tracks_holds
        cancel = self._cancel
        timeouts = TransactionTimeouts(
            statement_timeout_ms(self.settings), pooler=self.settings.pooler.transaction_mode
        )

        # Bound once: these run for every statement.
        statement_log_now = STATEMENT_LOG.get
        request_now = REQUEST_SCOPE.get
        deadline_now = DEADLINE.get
        # The deadline's clock: one reading serves the hold and the deadline.
        clock = time.monotonic

        def begin(
            statement: str, driver_connection: Any, info: Any, conn: Any = None
        ) -> Deadline | None:
            # What a statement's start does, on either path; the deadline in force, if any.
            # The driver's connection (None: found from ``conn``, SQLAlchemy's, when needed).
            # Itself the driver path's start hook: a call per read saved.
            log = statement_log_now()
            if log is not None:
                log.add(self, database, statement)
            if limit is not None:
                scope = request_now()
                if scope is not None:
                    # RequestScope.count, inlined: a call per statement saved.
                    scope.total += 1
                    counts = scope.counts
                    counts[statement] = counts.get(statement, 0) + 1
                    if scope.limit is None or limit < scope.limit:
                        scope.limit = limit
            budget = deadline_now()
            if not tracks_holds and budget is None:
                return None
            now = clock()
            if tracks_holds:
                hold = info.get(_HOLD)
                if hold is not None:
                    if idle is not None and not hold.idle_reported:
                        waited = now - (hold.last_end or hold.started)
                        if waited > idle:
                            self._report_idle(hold, waited, "before its next statement")
                    hold.statement_started = now
            if budget is not None:
                if budget.at <= now:
                    raise budget.error(f"before a statement on {database}")
                info[_DEADLINE] = budget
                # Watched: what cancels the statement on the server when the time runs out,
                # one per pooled connection, made again only for a new driver connection.
                if driver_connection is None:
                    driver_connection = conn.connection.driver_connection
                watching: _Watch | None = info.get(_WATCH)
                if watching is None or watching.driver_connection is not driver_connection:
                    watching = info[_WATCH] = _Watch(cancel, driver_connection)
                else:
                    watching.fired = None
                    watching.server_bounded = False
                    watching.sending = None
                budget.running[id(info)] = watching
            return budget

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            # Watched first (in begin): the deadline's cancel also stops the SET, should the
            # time run out in it.
            budget = begin(statement, None, conn.info, conn)
            if budget is not None and timeouts.bound(conn, statement, budget):
                conn.info[_WATCH].server_bounded = True

        def after(conn: Any, *args: Any) -> None:
            if tracks_holds or deadline_now() is not None:
                ended(conn.info)

        def ended(info: Any) -> Deadline | None:
            if tracks_holds:
                hold = info.get(_HOLD)
                if hold is not None and hold.statement_started is not None:
                    end = hold.last_end = clock()
                    hold.statement_seconds += end - hold.statement_started
                    hold.statement_started = None
            budget: Deadline | None = info.pop(_DEADLINE, None)
            if budget is not None:
                budget.running.pop(id(info), None)
                if budget.expired:
                    watching: _Watch | None = info.get(_WATCH)
                    if watching is not None:
                        watching.let_cancel_land()
            return budget

        def cancelled(info: Any, error: BaseException | None) -> DeadlineExceededError | None:
            # A statement failed: the deadline's error when the deadline stopped it, by its
            # cancel request or by the statement_timeout set from the time left (which the
            # server may act on a hair before the cancel is sent).
            budget = ended(info)
            if budget is None:
                return None
            watching: _Watch | None = info.get(_WATCH)
            fired = watching is not None and watching.fired is budget
            if watching is not None:
                watching.fired = None
            if not isinstance(error, StatementTimeoutError):
                return None
            if not fired and budget.remaining() > _CLOCKS:
                return None  # the application's own statement_timeout
            budget.ran_out()
            return budget.error(f"in a statement on {database}, which the server cancelled")

        def failed(context: ExceptionContext) -> DeadlineExceededError | None:
            connection = context.connection
            if connection is None or context.is_pre_ping:
                return None
            # Documented, but set only once a listener before returned an error.
            error = getattr(context, "chained_exception", None) or context.original_exception
            return cancelled(connection.info, error)

        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "handle_error", failed)
        if tracks_holds:
            event.listen(sync_engine.pool, "checkout", self._checked_out(node))
            event.listen(sync_engine.pool, "checkin", self._checked_in())
        hooks = statement_hooks(engine)
        if hooks is None:
            return

        # The same, for reads run on the driver (asyncdal.engine._driver): with every net off,
        # a read pays three context-variable reads.
        def end_driver_read(info: Any, error: BaseException | None) -> BaseException | None:
            if error is not None:
                return cancelled(info, translate(error, database=database))
            if tracks_holds or deadline_now() is not None:
                ended(info)
            return None

        # begin's result is for before(); the driver path's start hooks return nothing.
        hooks.start.append(cast("StartHook", begin))
        hooks.end.append(end_driver_read)
        hooks.stands_in_for("before_cursor_execute", before)
        hooks.stands_in_for("after_cursor_execute", after)

    def _checked_out(self, node: str) -> Callable[[Any, Any, Any], None]:
        leak = self.settings.safety.leak_detection_seconds
        database = self.database
        holds = self.holds
        request_id_now = current_request_id
        scope_now = REQUEST_SCOPE.get
        clock = time.monotonic
        current_task = asyncio.current_task

        def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            scope = scope_now()
            task = None
            if scope is None:  # the request names the holder; else the task does
                # try rather than contextlib.suppress: no context manager per checkout.
                try:  # noqa: SIM105
                    task = current_task()
                except RuntimeError:  # no running loop: no task
                    pass
            now = clock()
            frames = _capture_frames() if leak is not None else []
            info = record.info
            hold: Hold | None = info.get(_HOLD)
            if hold is None:
                # Positional: a dataclass's keyword arguments cost more.
                hold = info[_HOLD] = Hold(
                    database, node, now, scope, task, request_id_now(), frames
                )
            else:
                # The pooled connection's own, from its last checkout: set afresh rather than
                # made anew (measured: about 2,000 instructions a checkout saved).
                hold.started = now
                hold.scope = scope
                hold.task = task
                hold.request_id = request_id_now()
                hold.frames = frames
                hold.statement_seconds = 0.0
                hold.statement_started = None
                hold.last_end = 0.0
                if hold.leak_reported or hold.idle_reported:
                    hold.checkout_stack = ""
                    hold.leak_reported = hold.idle_reported = False
            holds[record] = hold
            if leak is not None and self._sweep_timer is None:
                self._arm_sweep(leak)

        return checked_out

    def _arm_sweep(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweep_timer = loop.call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Report the connections out longer than the threshold; come back when the next
        one would be."""
        self._sweep_timer = None
        leak = self.settings.safety.leak_detection_seconds
        assert leak is not None
        now = time.monotonic()
        for hold in list(self.holds.values()):  # in checkout order: the oldest first
            if now - hold.started < leak:
                self._arm_sweep(hold.started + leak - now)
                return
            if not hold.leak_reported:
                self._report_leak(hold)

    def _checked_in(self) -> Callable[[Any, Any], None]:
        idle = self.settings.safety.idle_hold_seconds
        holds = self.holds
        listeners = self.hold_listeners
        clock = time.monotonic

        def checked_in(dbapi_connection: Any, record: Any) -> None:
            hold = holds.pop(record, None)
            if hold is None:
                return
            now = clock()
            if idle is not None and not hold.idle_reported and hold.last_end:
                waited = now - hold.last_end
                if waited > idle:
                    self._report_idle(hold, waited, "after its last statement")
            if listeners:
                route = "background" if hold.scope is None else hold.scope.route
                for listener in listeners:
                    listener(hold.node, route, now - hold.started)
            # The hold stays in the connection's info for its next checkout (statements run
            # only on a connection checked out, which sets it afresh); what it names goes now.
            hold.scope = hold.task = None

        return checked_in

    def _report_leak(self, hold: Hold) -> None:
        hold.leak_reported = True
        hold.checkout_stack = hold.stack()
        held = time.monotonic() - hold.started
        statements = hold.statement_seconds
        if hold.statement_started is not None:
            statements += time.monotonic() - hold.statement_started
        leak_logger.warning(
            "connection of %s/%s held for %.1f s (%.1f s of it in statements) by %s "
            "(request %s), checked out at:\n%s",
            hold.database,
            hold.node,
            held,
            statements,
            hold.owner,
            hold.request_id or "-",
            hold.checkout_stack,
            extra={
                "database": hold.database,
                "node": hold.node,
                "held_seconds": round(held, 3),
                "statement_seconds": round(statements, 3),
                "owner": hold.owner,
                "request_id": hold.request_id,
            },
        )

    def _report_idle(self, hold: Hold, waited: float, when: str) -> None:
        hold.idle_reported = True
        leak_logger.warning(
            "connection of %s/%s waited %.2f s %s while checked out by %s (request %s): "
            "work that is not the database's (an HTTP call, a sleep) was done while holding "
            "it and its transaction; do it before or after the unit of work",
            hold.database,
            hold.node,
            waited,
            when,
            hold.owner,
            hold.request_id or "-",
            extra={
                "database": hold.database,
                "node": hold.node,
                "idle_seconds": round(waited, 3),
                "owner": hold.owner,
                "request_id": hold.request_id,
            },
        )
