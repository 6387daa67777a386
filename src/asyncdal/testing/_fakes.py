"""Fakes for unit tests that need no database (and no pytest): a unit of work that records
commits, and its outbox. The in-memory repository is in ``asyncdal.testing._memory``.

Example:
    >>> products = InMemoryRepository.like(ProductRepository)
    >>> uow = FakeUnitOfWork({ProductRepository: products})
    >>> async with uow:
    ...     await uow.repository(ProductRepository).add(Product(sku="A", name="a", price=1))
    ...     await uow.commit()
    >>> uow.committed
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal.errors import ReadOnlyError, UnitOfWorkError
from asyncdal.orm._uow import UnitOfWork
from asyncdal.testing._memory import InMemoryRepository, Snapshot

__all__ = ["FakeOutbox", "FakeUnitOfWork"]

R = TypeVar("R")


def _no_session() -> AsyncSession:
    raise UnitOfWorkError("a FakeUnitOfWork has no session; use its repositories")


class FakeOutbox:
    """The outbox of a :class:`FakeUnitOfWork` (``Outbox.of(uow)``): keeps the events added.

    Attributes:
        events: ``(event_type, payload, key)`` of each ``add``, keys as strings like the real
            outbox stores them.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str | None]] = []

    async def add(
        self, event_type: str, payload: Mapping[str, Any], *, key: str | int | None = None
    ) -> int:
        """Record the event; returns its position (1, 2, ...) as its id."""
        if not event_type:
            raise ValueError("event_type must not be empty")
        self.events.append((event_type, dict(payload), None if key is None else str(key)))
        return len(self.events)


class FakeUnitOfWork(UnitOfWork):
    """A unit of work for unit tests: records commits and rollbacks, hands out fakes.

    It is a :class:`~asyncdal.UnitOfWork`, so code typed against ``UnitOfWork`` accepts
    it; it has no session, and ``repository(cls)`` returns the fake registered for ``cls``.
    As the real one, it is entered once, commits only while open, and what was not committed
    when it rolls back or is left is undone: the in-memory repositories' rows and values, and
    the outbox events, go back to how they were at the last commit (or on entering).

    Args:
        repositories: the fake to return for each repository class.
        read_only: behave like a read-only unit of work (``commit()`` raises).
    """

    def __init__(
        self, repositories: Mapping[Any, Any] | None = None, *, read_only: bool = False
    ) -> None:
        super().__init__(None, _no_session, read_only=read_only)
        self.repositories = dict(repositories or {})
        self.committed = False
        self.commits = 0
        self.rollbacks = 0
        self.fake_outbox = FakeOutbox()
        self._saved: list[tuple[InMemoryRepository[Any], Snapshot]] = []
        self._saved_events = 0

    @property
    def outbox_stand_in(self) -> FakeOutbox:
        """What ``asyncdal.outbox.Outbox.of(uow)`` returns: a :class:`FakeOutbox`, whose
        ``events`` list what was added."""
        if self.read_only:
            raise ReadOnlyError("a read-only unit of work cannot add outbox events")
        return self.fake_outbox

    def repository(self, repository_class: Callable[..., R]) -> R:
        """The fake registered for ``repository_class``."""
        try:
            return cast("R", self.repositories[repository_class])
        except KeyError:
            raise KeyError(f"no fake registered for {repository_class!r}") from None

    async def commit(self) -> None:
        if self.read_only:
            raise ReadOnlyError("a read-only unit of work cannot commit")
        if not self._open:
            raise UnitOfWorkError("the unit of work is not open: use 'async with'")
        self.commits += 1
        self.committed = True
        self._save()

    async def rollback(self) -> None:
        self.rollbacks += 1
        self._restore()

    def _save(self) -> None:
        """Remember the state to go back to: the last commit."""
        fakes = {id(fake): fake for fake in self.repositories.values()}
        self._saved = [
            (fake, fake.snapshot())
            for fake in fakes.values()
            if isinstance(fake, InMemoryRepository)
        ]
        self._saved_events = len(self.fake_outbox.events)

    def _restore(self) -> None:
        for fake, snapshot in self._saved:
            fake.restore(snapshot)
        del self.fake_outbox.events[self._saved_events :]

    @property
    def session(self) -> AsyncSession:
        """Always raises: a fake unit of work has no session."""
        return _no_session()

    def reopen(self) -> None:
        """Let this fake be entered again once it has been left: for a fake that stands in
        for a provider across requests (``asyncdal.testing.override``), one transaction per
        request, as the real providers open a new unit of work for each.

        Raises:
            UnitOfWorkError: it is still open.
        """
        if self._open:
            raise UnitOfWorkError("the unit of work is still open: leave it before reopening")
        self._entered = False

    async def __aenter__(self) -> Self:
        # As the real one: a unit of work is one transaction, entered once.
        if self._entered:
            raise UnitOfWorkError("a unit of work can be entered only once; make a new one")
        self._entered = True
        self._open = True
        self._save()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        if exc_type is not None or not self.committed:
            self.rollbacks += 1
        self._restore()  # what was not committed is gone, as when a session closes
