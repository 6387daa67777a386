"""Fakes for unit tests that need no database (and no pytest): a dict-backed repository, a unit
of work that records commits, and its outbox.

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

import builtins
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal.errors import InvalidQueryError, ReadOnlyError, UnitOfWorkError
from asyncdal.orm._repository import Repository, check_allowed, check_page
from asyncdal.orm._uow import UnitOfWork

__all__ = ["FakeOutbox", "FakeUnitOfWork", "InMemoryRepository"]

ModelT = TypeVar("ModelT")
R = TypeVar("R")

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda value, choices: value in choices,
}


class InMemoryRepository(Generic[ModelT]):
    """A dict-backed stand-in for :class:`~asyncdal.Repository`, same rules.

    Args:
        model: the mapped class it stores.
        sortable: as on ``Repository``.
        filterable: as on ``Repository``.
        default_page_size: as on ``Repository``.
        max_page_size: as on ``Repository``.
    """

    def __init__(
        self,
        model: type[ModelT],
        *,
        sortable: Iterable[str] = (),
        filterable: Iterable[str] = (),
        default_page_size: int = 50,
        max_page_size: int = 100,
    ) -> None:
        self.model = model
        self.sortable = frozenset(sortable)
        self.filterable = frozenset(filterable)
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        (self._key,) = (column.key for column in inspect(model).primary_key)
        self._columns = set(inspect(model).columns.keys())
        self._rows: dict[Any, ModelT] = {}
        self._ids = itertools.count(1)

    @classmethod
    def like(cls, repository: type[Repository[ModelT]]) -> InMemoryRepository[ModelT]:
        """An in-memory repository with the model and whitelists of ``repository``."""
        return cls(
            repository.model,
            sortable=repository.sortable,
            filterable=repository.filterable,
            default_page_size=repository.default_page_size,
            max_page_size=repository.max_page_size,
        )

    async def get(self, ident: Any) -> ModelT | None:
        return self._rows.get(ident)

    async def get_many(self, idents: Iterable[Any]) -> list[ModelT]:
        return [self._rows[ident] for ident in idents if ident in self._rows]

    async def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[ModelT]:
        page = check_page(limit, offset, default=self.default_page_size, maximum=self.max_page_size)
        rows: builtins.list[ModelT] = sorted(
            self._matching(filters), key=lambda row: getattr(row, self._key)
        )
        fields = [order_by] if isinstance(order_by, str) else list(order_by or ())
        for field in reversed(fields):
            name = field.removeprefix("-")
            self._check(name, self.sortable, "sort")
            rows.sort(key=lambda row: getattr(row, name), reverse=field.startswith("-"))
        return rows[offset : offset + page]

    async def count(self, *, filters: Mapping[str, Any] | None = None) -> int:
        return len(self._matching(filters))

    async def add(self, obj: ModelT) -> ModelT:
        if getattr(obj, self._key, None) is None:
            setattr(obj, self._key, next(self._ids))
        self._rows[getattr(obj, self._key)] = obj
        return obj

    async def add_many(self, objs: Iterable[ModelT]) -> builtins.list[ModelT]:
        return [await self.add(obj) for obj in objs]

    async def update(self, obj_or_ident: Any, /, **values: Any) -> ModelT | None:
        unknown = set(values) - self._columns
        if unknown:
            raise InvalidQueryError(f"unknown columns: {sorted(unknown)}")
        obj = self._resolve(obj_or_ident)
        if obj is not None:
            for name, value in values.items():
                setattr(obj, name, value)
        return obj

    async def delete(self, obj_or_ident: Any, /) -> bool:
        obj = self._resolve(obj_or_ident)
        if obj is None:
            return False
        del self._rows[getattr(obj, self._key)]
        return True

    def _resolve(self, obj_or_ident: Any) -> ModelT | None:
        if isinstance(obj_or_ident, self.model):
            return obj_or_ident
        return self._rows.get(obj_or_ident)

    def _check(self, name: str, allowed: frozenset[str], purpose: str) -> None:
        check_allowed(name, allowed, purpose)

    def _matching(self, filters: Mapping[str, Any] | None) -> builtins.list[ModelT]:
        tests: builtins.list[tuple[str, Callable[[Any, Any], bool], Any]] = []
        for key, expected in (filters or {}).items():
            name, _, op = key.partition("__")
            compare = _COMPARE.get(op or "eq")
            if compare is None:
                raise InvalidQueryError(f"unknown filter operator {op!r}")
            self._check(name, self.filterable, "filter")
            tests.append((name, compare, expected))
        return [
            row
            for row in self._rows.values()
            if all(compare(getattr(row, name), expected) for name, compare, expected in tests)
        ]


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
        self.commits += 1
        self.committed = True

    async def rollback(self) -> None:
        self.rollbacks += 1

    @property
    def session(self) -> AsyncSession:
        """Always raises: a fake unit of work has no session."""
        return _no_session()

    async def __aenter__(self) -> Self:
        self._open = True
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
