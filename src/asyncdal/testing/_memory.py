"""``InMemoryRepository``: your repository class, with its queries answered from memory.

``InMemoryRepository.like(PostRepository)`` makes a subclass of *your* ``PostRepository``
whose query methods (``get``, ``list``, ``page``, ``add``, ``update``, ``upsert``, ...) keep
rows in a dict. It is a ``PostRepository`` (to ``isinstance`` and to mypy), so your own methods
run on it when they are written with the repository's public methods; one that uses
``self.session`` fails with a message that names it. The contract suite in asyncdal's tests
runs every method and operator against both this and PostgreSQL.

What PostgreSQL would do, it does: filters with SQL's NULL semantics, the same checks and
messages, NULLs last ascending, the same pages and cursors, Python-side and simple server
defaults (``now()``, ``gen_random_uuid()``, literals), identity keys from 1, NOT NULL and
unique constraints (``ConstraintViolationError``, ``UniqueViolationError``), version columns
(``StaleVersionError``), text a column cannot hold (``InvalidValueError``: a NUL, a lone
surrogate, text for a number or a date; a NUMERIC's text is stored as a ``Decimal``), keys and
filter values checked as the real repository checks them; in a ``FakeUnitOfWork``, what was not
committed is undone. What it does not: relationships are what you set (``load=`` is checked,
then ignored), foreign keys and check constraints are not enforced, text sorts by code point
(the ``C`` collation), and changes made by assigning attributes directly are not versioned (use
``update``).

Example:
    >>> users = InMemoryRepository.like(UserRepository)   # typed as UserRepository
    >>> await users.add(User(email="ada@example.com"))
    >>> await users.by_email("ada@example.com")           # your method, run in memory
"""

from __future__ import annotations

import builtins
import functools
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, NoReturn, TypeVar, cast

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal.errors import InvalidQueryError, InvalidValueError
from asyncdal.orm._cursors import can_encode, encode_cursor
from asyncdal.orm._filters import check_key, parse_filters
from asyncdal.orm._loading import Load, check_load_names, check_rows_load
from asyncdal.orm._pages import ListQuery, Page, PageRequest, plan_page
from asyncdal.orm._repository import Repository
from asyncdal.orm._upsert import plan_upsert
from asyncdal.orm._values import python_type
from asyncdal.orm._versions import check_expected_version, next_version, version_attribute
from asyncdal.testing._rows import (
    DATABASE,
    check_constraints,
    compare,
    default_value,
    matches,
    onupdate_value,
)

__all__ = ["InMemoryRepository", "Snapshot"]

ModelT = TypeVar("ModelT")
RepositoryT = TypeVar("RepositoryT", bound=Repository[Any])


class _NoSession:
    """Stands where ``self.session`` is: any use names the method that tried it, and why."""

    def __init__(self, repository: str) -> None:
        self._repository = repository

    def __getattr__(self, name: str) -> NoReturn:
        caller = sys._getframe(1).f_code.co_qualname
        raise NotImplementedError(
            f"{caller} uses self.session.{name}, and {self._repository} keeps its rows in "
            "memory, without a session: write it with the repository's methods (get, list, "
            "page, count, add, update, delete, upsert, ...) to run it on the fake, or test it "
            "against PostgreSQL"
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The rows of an in-memory repository and their column values at one moment."""

    rows: dict[tuple[Any, ...], Any]
    values: dict[int, dict[str, Any]]


class InMemoryRepository(Repository[ModelT]):
    """A :class:`~asyncdal.Repository` that keeps its rows in memory, for unit tests.

    Make one with :meth:`like`; it has the model, whitelists, page sizes and custom methods of
    the repository class it is made like.

    Attributes:
        rows: the stored objects by primary key (a tuple), in insertion order.
    """

    def __init__(self, session: Any = None) -> None:
        # No super().__init__: self.session is the stand-in, whatever was passed.
        self.session = cast("AsyncSession", _NoSession(type(self).__name__))
        self.rows: dict[tuple[Any, ...], ModelT] = {}
        self._next_id = 1

    @classmethod
    def like(cls, repository: type[RepositoryT]) -> RepositoryT:
        """An in-memory ``repository``: a subclass of it whose queries run in memory.

        Example:
            >>> posts = InMemoryRepository.like(PostRepository)
            >>> uow = FakeUnitOfWork({PostRepository: posts})
        """
        if not hasattr(repository, "model"):
            raise TypeError(f"{repository.__name__} has no model: subclass Repository[Model]")
        # Your class first: its methods, and its overrides calling super(), come before the
        # in-memory primitives, which come before Repository's SQL ones.
        fake = type(f"InMemory{repository.__name__}", (repository, cls), {})
        fake.__module__ = repository.__module__
        return cast("RepositoryT", fake(None))

    def snapshot(self) -> Snapshot:
        """The rows and their values now (``FakeUnitOfWork`` takes one at each commit)."""
        columns = [name for name, _ in inspect(self.model).columns.items()]
        values = {
            id(obj): {name: getattr(obj, name) for name in columns} for obj in self.rows.values()
        }
        # Not the next id: as a sequence, it does not go back on rollback.
        return Snapshot(dict(self.rows), values)

    def restore(self, snapshot: Snapshot) -> None:
        """Go back to ``snapshot``: rows added since are gone, deleted ones back, values as
        they were (a rollback)."""
        self.rows = dict(snapshot.rows)
        for obj in self.rows.values():
            for name, value in snapshot.values[id(obj)].items():
                setattr(obj, name, value)

    async def get(self, ident: Any, *, load: Load = None) -> ModelT | None:
        self._check_load(load)
        return self.rows.get(self._key(ident))

    async def get_many(self, idents: Iterable[Any], *, load: Load = None) -> builtins.list[ModelT]:
        self._check_load(load)
        found = (self.rows.get(self._key(ident)) for ident in idents)
        return [obj for obj in found if obj is not None]

    async def count(self, *, filters: Mapping[str, Any] | None = None) -> int:
        conditions = parse_filters(self.model, self.filterable, filters)
        return sum(all(matches(row, c) for c in conditions) for row in self.rows.values())

    async def _listed(
        self, request: PageRequest, *, load: Load, count: bool, rows: bool
    ) -> tuple[builtins.list[Any], int | None]:
        # list() and list_and_count() are Repository's own, down to this.
        check_rows_load(load, rows)
        self._check_load(load)
        items: builtins.list[Any]
        items, total, _ = self._window(request)
        if rows:
            keys = [prop.key for prop in inspect(self.model).column_attrs]
            items = [{key: getattr(item, key) for key in keys} for item in items]
        return items, total if count else None

    async def page(
        self,
        query: ListQuery | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        load: Load = None,
        count: bool = True,
    ) -> Page[ModelT]:
        request = plan_page(
            self,
            query=query,
            filters=filters,
            order_by=order_by,
            limit=limit,
            offset=offset,
            cursor=cursor,
        )
        self._check_load(load)
        items, total, more = self._window(request)
        next_cursor = None
        if more and can_encode(self.model, request.keys):
            next_cursor = encode_cursor(self.model, request.keys, items[-1], request.digest)
        return Page(
            items=items,
            total=total if count else None,
            limit=request.limit,
            offset=None if request.position is not None else request.offset,
            next_cursor=next_cursor,
        )

    async def add(self, obj: ModelT) -> ModelT:
        self._insert(obj)
        return obj

    async def add_many(self, objs: Iterable[ModelT]) -> builtins.list[ModelT]:
        return [await self.add(obj) for obj in objs]

    async def update(
        self, obj_or_ident: Any, /, *, expected_version: Any = None, **values: Any
    ) -> ModelT | None:
        unknown = set(values) - set(inspect(self.model).columns.keys())
        if unknown:
            raise InvalidQueryError(f"unknown columns: {sorted(unknown)}")
        obj = self._resolve_stored(obj_or_ident)
        if obj is None:
            return None
        check_expected_version(obj, expected_version)
        self._change(obj, values)
        return obj

    async def delete(self, obj_or_ident: Any, /, *, expected_version: Any = None) -> bool:
        obj = self._resolve_stored(obj_or_ident)
        if obj is None:
            return False
        check_expected_version(obj, expected_version)
        del self.rows[self._key_of(obj)]
        return True

    async def upsert_many(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        constraint: str,
        update: Iterable[str] | None = None,
    ) -> builtins.list[ModelT]:
        plan = plan_upsert(self.model, builtins.list(rows), constraint, update)
        stored = []
        for row in plan.rows:
            key = plan.key_of(row)
            existing = next(
                (
                    obj
                    for obj in self.rows.values()
                    if tuple(getattr(obj, name) for name in plan.key) == key
                ),
                None,
            )
            if existing is None:
                obj = self.model(**row)
                self._insert(obj)
                stored.append(obj)
            else:
                # As ON CONFLICT DO UPDATE: a conflict writes (and versions) the row even when
                # the values are the same.
                changes = {name: row[name] for name in plan.update if name in row}
                self._change(existing, changes, always=bool(plan.update))
                stored.append(existing)
        return stored

    def _check_load(self, load: Load) -> None:
        check_load_names(self.model, self.default_load if load is None else load)

    def _window(self, request: PageRequest) -> tuple[builtins.list[ModelT], int, bool]:
        """The page's rows, the number matching, and whether more follow."""
        found = [
            row
            for row in self.rows.values()
            if all(matches(row, condition) for condition in request.conditions)
        ]
        keys = request.keys

        def values(row: Any) -> list[Any]:
            return [getattr(row, key.column) for key in keys]

        found.sort(key=functools.cmp_to_key(lambda a, b: compare(values(a), values(b), keys)))
        total = len(found)
        if request.position is not None:
            position = request.position
            found = [row for row in found if compare(values(row), position, keys) > 0]
        window = found[request.offset : request.offset + request.limit]
        return window, total, request.offset + request.limit < len(found)

    def _key(self, ident: Any) -> tuple[Any, ...]:
        # Checked as the SQL repository checks it: a key its column cannot take is refused.
        return check_key(self.model, ident)

    def _key_of(self, obj: Any) -> tuple[Any, ...]:
        return tuple(getattr(obj, column.key) for column in inspect(self.model).primary_key)

    def _resolve_stored(self, obj_or_ident: Any) -> ModelT | None:
        if isinstance(obj_or_ident, self.model):
            return cast("ModelT", obj_or_ident)
        return self.rows.get(self._key(obj_or_ident))

    def _insert(self, obj: Any) -> None:
        """Fill in defaults and the key as an INSERT would, check constraints, store."""
        mapper = inspect(self.model)
        version = version_attribute(self.model)
        values = {name: getattr(obj, name) for name, _ in mapper.columns.items()}
        for name, value in _writable(self.model, values).items():
            setattr(obj, name, value)
            values[name] = value
        for name, column in mapper.columns.items():
            if values[name] is not None:
                continue
            if name == version:
                values[name] = next_version(self.model, None)
            elif column.identity is not None or column is _autoincrement(self.model):
                values[name] = self._next_id
                self._next_id += 1
            else:
                found, value = default_value(column, values)
                if found:
                    values[name] = value
            if values[name] is not None:
                setattr(obj, name, values[name])
        check_constraints(self.model, obj, builtins.list(self.rows.values()))
        self.rows[self._key_of(obj)] = obj

    def _change(self, obj: Any, values: Mapping[str, Any], *, always: bool = False) -> None:
        """Apply ``values`` as a flushed UPDATE would: only when something changes (or
        ``always``), with ``onupdate`` columns and the version bumped; refused whole when it
        would break a constraint."""
        mapper = inspect(self.model)
        values = {**values, **_writable(self.model, values)}
        before = {name: getattr(obj, name) for name, _ in mapper.columns.items()}
        if not always and all(before[name] == value for name, value in values.items()):
            return
        after = {**before, **values}
        version = version_attribute(self.model)
        for name, column in mapper.columns.items():
            if column.onupdate is not None and name not in values and name != version:
                after[name] = onupdate_value(column, after)
        if version is not None and next_version(self.model, before[version]) is not None:
            after[version] = next_version(self.model, before[version])
        old_key = self._key_of(obj)
        for name, value in after.items():
            setattr(obj, name, value)
        others = [row for key, row in self.rows.items() if key != old_key]
        try:
            check_constraints(self.model, obj, others)
        except Exception:
            for name, value in before.items():
                setattr(obj, name, value)
            raise
        if self._key_of(obj) != old_key:
            self.rows = {
                (self._key_of(obj) if key == old_key else key): row
                for key, row in self.rows.items()
            }


# Column kinds asyncpg takes no text for (NUMERIC it parses, below; an enum, by name).
_NOT_TEXT = (int, float, bool, date, datetime, time, timedelta)


def _writable(model: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The text among ``values`` as PostgreSQL would store it (a NUMERIC's text as a
    ``Decimal``); text it would refuse is an :class:`~asyncdal.errors.InvalidValueError`, as
    the driver's or the server's error is, here naming the column.

    Raises:
        InvalidValueError: a NUL character (SQLSTATE 22021), a lone surrogate, text that is
            not a number for a NUMERIC, or text for another non-text column (22000).
    """
    columns = inspect(model).columns
    converted: dict[str, Any] = {}
    for name, value in values.items():
        if not isinstance(value, str) or name not in columns:
            continue
        kind = python_type(columns[name].type)
        problem, sqlstate = None, "22000"
        if "\x00" in value:
            problem, sqlstate = "text may not contain a NUL character", "22021"
        elif not _encodes(value):
            problem = "text may not contain a lone surrogate"
        elif kind is Decimal:
            try:
                converted[name] = Decimal(value)
            except InvalidOperation:
                problem = "text that is not a number"
        elif kind is not None and issubclass(kind, _NOT_TEXT) and not issubclass(kind, Enum):
            problem = f"expected {kind.__name__}, got str"
        if problem is not None:
            raise InvalidValueError(
                f"database {DATABASE!r}: invalid value: {name}: {problem} (SQLSTATE {sqlstate})",
                database=DATABASE,
                sqlstate=sqlstate,
            )
    return converted


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _autoincrement(model: type[Any]) -> Any:
    """The column PostgreSQL numbers itself (a lone integer primary key), or None."""
    return inspect(model).local_table.autoincrement_column
