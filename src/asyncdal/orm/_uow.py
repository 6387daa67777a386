"""The unit of work: one session, one transaction, and the repositories bound to it.

``async with db.unit_of_work() as uow:`` opens a session; ``await uow.commit()`` commits it;
leaving the block rolls back whatever was not committed and returns the connection.

Code that runs inside an open unit of work, in the same asyncio task and for the same database,
joins it instead of opening a second transaction: its ``commit()`` only flushes, and the outer
unit of work commits. A task started with ``asyncio.create_task`` inherits context variables but
never joins its parent's unit of work, because an ``AsyncSession`` must not be shared by tasks.

Example:
    >>> async def rename(db, product_id, name):
    ...     async with db.unit_of_work() as uow:
    ...         products = uow.repository(ProductRepository)
    ...         await products.update(product_id, name=name)
    ...         await uow.commit()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from asyncdal._translate import closed_before_sending, is_connection_failure
from asyncdal.engine._sqlalchemy import session_holds_new
from asyncdal.errors import (
    CommitOutcomeUnknownError,
    NotCommittedError,
    ReadOnlyError,
    UnitOfWorkError,
)
from asyncdal.orm._closing import close_session
from asyncdal.orm._versions import flush
from asyncdal.replicas._lsn import COMMIT_LSN

__all__ = ["UnitOfWork", "current_unit_of_work"]

R = TypeVar("R")

# The innermost open unit of work of this context; each one links to the one it shadowed.
_innermost: ContextVar[UnitOfWork | None] = ContextVar("asyncdal_unit_of_work", default=None)


def current_unit_of_work(database: object) -> UnitOfWork | None:
    """The unit of work open for ``database`` in the current task, if any."""
    return _open_in(_innermost.get(), database, asyncio.current_task())


def _open_in(
    uow: UnitOfWork | None, database: object, task: asyncio.Task[Any] | None
) -> UnitOfWork | None:
    """The first unit of work from ``uow`` on (following what each shadowed) open for
    ``database`` in ``task``."""
    while uow is not None:
        root = uow._root
        if uow.database is database and uow._task is task and uow._open and not root._sealed:
            return uow
        uow = uow._shadowed
    return None


class UnitOfWork:
    """One session and one transaction on one database.

    Get one from ``Database.unit_of_work()``, ``read_only_unit_of_work()`` or
    ``background_unit_of_work()`` rather than constructing it. With ``join=False`` it never
    joins an open unit of work: it always has a session and a transaction of its own.
    ``session`` is the real SQLAlchemy ``AsyncSession``.

    Attributes:
        database: the owner (a :class:`~asyncdal.database.Database`).
        read_only: True when this unit of work may not write or commit.
    """

    def __init__(
        self,
        database: object,
        session_factory: Callable[[], AsyncSession],
        *,
        read_only: bool = False,
        join: bool = True,
    ) -> None:
        self.database = database
        self.read_only = read_only
        self._join = join
        self._session_factory = session_factory
        self._session: AsyncSession | None = None
        # The unit of work this one joined; None for an owner (no self-reference: keeping
        # units of work out of reference cycles spares the garbage collector under load).
        self._joined_to: UnitOfWork | None = None
        self._repositories: dict[type[Any], Any] = {}
        self._task: asyncio.Task[Any] | None = None
        self._shadowed: UnitOfWork | None = None
        self._token: Token[UnitOfWork | None] | None = None
        self._open = False
        self._entered = False
        self._sealed = False
        self._failed_inside = False
        self.commit_lsn: str | None = None
        """The primary's WAL position after the last commit that wrote (``0/16B3748``), on a
        database with replicas; None otherwise. A replica that has replayed it shows the
        commit (see ``asyncdal.read_your_writes`` and the ``X-DB-LSN`` header)."""

    @property
    def _root(self) -> UnitOfWork:
        return self if self._joined_to is None else self._joined_to

    @property
    def session(self) -> AsyncSession:
        """The ``AsyncSession`` of this unit of work (shared with any joined one)."""
        root = self if self._joined_to is None else self._joined_to
        session = root._session
        if session is None:
            raise UnitOfWorkError("the unit of work is not open: use 'async with'")
        return session

    @property
    def is_open(self) -> bool:
        """True between entering and leaving the ``async with`` block."""
        return self._open

    @property
    def joined(self) -> bool:
        """True when this unit of work joined an outer one instead of opening its own."""
        return self._joined_to is not None

    def repository(self, repository_class: Callable[[AsyncSession], R]) -> R:
        """The repository of this class bound to this unit of work's session (one per class).

        Args:
            repository_class: a :class:`~asyncdal.repository.Repository` subclass, or any
                callable taking the session.
        """
        root = self if self._joined_to is None else self._joined_to
        cache = root._repositories
        repository = cache.get(repository_class)  # type: ignore[call-overload]
        if repository is None:
            repository = cache[repository_class] = repository_class(self.session)  # type: ignore[index]
        return repository  # type: ignore[no-any-return]

    def seal(self) -> None:
        """Stop nested code from joining this unit of work; it opens its own from now on.

        The FastAPI integration seals a request's unit of work once its transaction is settled,
        so a background task that runs after the response gets a transaction of its own.
        """
        self._root._sealed = True

    async def commit(self) -> None:
        """Commit the transaction; inside a joined unit of work, flush and leave it to the outer.

        Raises:
            ReadOnlyError: on a read-only unit of work.
            UnitOfWorkError: when a joined unit of work failed earlier in this transaction.
            CommitOutcomeUnknownError: the connection failed during COMMIT, so nobody knows
                whether it was committed; never retried.
            NotCommittedError: the connection was closed before COMMIT was sent: rolled back.
        """
        if self.read_only:
            raise ReadOnlyError("a read-only unit of work cannot commit")
        if self.joined:
            await flush(self.session)
            return
        if self._failed_inside:
            await self.rollback()
            raise UnitOfWorkError(
                "a joined unit of work failed inside this transaction; it was rolled back"
            )
        session = self.session
        # Flush first: a failure while flushing leaves nothing committed (a known outcome);
        # only a failure of COMMIT itself leaves the outcome unknown. A session with nothing
        # to flush is told apart here, without a trip into SQLAlchemy's greenlet.
        if _may_flush(session):
            await flush(session)
        try:
            await session.commit()
        except Exception as error:
            if not is_connection_failure(error):
                raise
            name = getattr(self.database, "name", "?")
            if closed_before_sending(error):
                raise NotCommittedError(
                    f"the connection to {name!r} was closed before COMMIT could be sent "
                    f"({type(error).__name__}): the server rolled the transaction back, nothing "
                    "was saved",
                    database=name,
                ) from error
            raise CommitOutcomeUnknownError(
                f"the connection to {name!r} failed during COMMIT ({type(error).__name__}): "
                "the transaction may or may not have been committed; it was not retried",
                database=name,
            ) from error
        # Set by the replica routing when the transaction wrote on a database with replicas.
        self.commit_lsn = session.info.pop(COMMIT_LSN, None)

    async def rollback(self) -> None:
        """Roll back everything not yet committed (the whole transaction, even when joined)."""
        self._root._failed_inside = False
        await self.session.rollback()

    async def __aenter__(self) -> Self:
        return self._enter()

    def _enter(self) -> Self:
        """What ``async with`` does on the way in, without awaiting (nothing here does I/O):
        the FastAPI providers open a request's unit of work this way, sparing a coroutine.
        Leave it with ``__aexit__``.

        Raises:
            UnitOfWorkError: entered before, or writable inside a read-only one.
        """
        if self._entered:
            raise UnitOfWorkError("a unit of work can be entered only once; make a new one")
        self._entered = True
        task = asyncio.current_task()
        shadowed = _innermost.get()
        outer = _open_in(shadowed, self.database, task) if self._join else None
        if outer is not None:
            if outer.read_only and not self.read_only:
                raise UnitOfWorkError(
                    "cannot open a writable unit of work inside a read-only one in the same task"
                )
            self._joined_to = outer._root
        else:
            factory = self._session_factory
            # The factories are async_sessionmakers: their class with their arguments is the
            # session they make, without the Python loop that merges them with none (measured,
            # about 5 thousand of a session's 50 thousand instructions).
            if type(factory) is async_sessionmaker:
                self._session = factory.class_(**factory.kw)
            else:
                self._session = factory()
        self._task = task
        self._shadowed = shadowed
        self._token = _innermost.set(self)
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        if self._token is not None:
            # Exited in another context than it was entered in (e.g. a generator closed by
            # another task): the link chain still skips it, because it is closed.
            # try/except, not contextlib.suppress, whose entering and leaving are Python
            # calls at the end of every unit of work.
            try:  # noqa: SIM105
                _innermost.reset(self._token)
            except ValueError:
                pass
            self._token = None
        if self._joined_to is not None:
            if exc_type is not None:
                self._root._failed_inside = True
            return
        session, self._session = self._session, None
        self._repositories.clear()
        if session is not None and _holds_anything(session):
            # Closing rolls back whatever was not committed and returns the connection.
            await close_session(session)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        kind = "read-only" if self.read_only else "read-write"
        return f"<UnitOfWork {kind} {state} on {self.database!r}>"


def _may_flush(session: AsyncSession) -> bool:
    """False when ``session`` has nothing to flush (a stand-in for one always may)."""
    if not isinstance(session, AsyncSession):
        return True
    return bool(session.new or session.deleted or session.dirty)


def _holds_anything(session: AsyncSession) -> bool:
    """False when closing ``session`` would do nothing: no transaction (so no connection) and
    no object. The FastAPI middleware closes a request's session once its answer is settled;
    leaving the unit of work then costs no second close (a greenlet switch per request). A
    stand-in for a session is always closed."""
    if not isinstance(session, AsyncSession):
        return True
    sync = session.sync_session
    return sync.in_transaction() or bool(sync.identity_map) or session_holds_new(sync)
