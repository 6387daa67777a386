"""``Repository[Model]``: typed, generic async CRUD over one mapped class.

Sorting and filtering accept only the columns a repository whitelists, so a sort parameter such
as ``name; drop table products`` is refused with :class:`~asyncdal.errors.InvalidQueryError`
(a 422 through the FastAPI integration) and never reaches SQL.

Example:
    >>> class ProductRepository(Repository[Product]):
    ...     sortable = frozenset({"id", "name", "price"})
    ...     filterable = frozenset({"sku", "price"})
    >>> async with db.unit_of_work() as uow:
    ...     products = uow.repository(ProductRepository)
    ...     cheap = await products.list(filters={"price__lt": 10}, order_by="-price", limit=20)
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin

from sqlalchemy import ColumnElement, Select, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from asyncdal.errors import InvalidQueryError
from asyncdal.orm._values import MAX_BIGINT, check_value, check_values

__all__ = ["Repository"]

ModelT = TypeVar("ModelT")

_OPERATORS: dict[str, Callable[[InstrumentedAttribute[Any], Any], ColumnElement[bool]]] = {
    "eq": lambda column, value: column.is_(None) if value is None else column == value,
    "ne": lambda column, value: column.is_not(None) if value is None else column != value,
    "lt": lambda column, value: column < value,
    "lte": lambda column, value: column <= value,
    "gt": lambda column, value: column > value,
    "gte": lambda column, value: column >= value,
    "in": lambda column, value: column.in_(list(value)),
}


def check_page(limit: int | None, offset: int, *, default: int, maximum: int) -> int:
    """The page size to use for ``limit``; shared by the in-memory fake.

    Raises:
        InvalidQueryError: ``limit`` outside 1..``maximum``, or ``offset`` negative or past
            what PostgreSQL takes (a BIGINT).
    """
    page = default if limit is None else limit
    if not 1 <= page <= maximum:
        raise InvalidQueryError(f"limit must be between 1 and {maximum}")
    if not 0 <= offset <= MAX_BIGINT:
        raise InvalidQueryError(f"offset must be between 0 and {MAX_BIGINT}")
    return page


def check_allowed(name: str, allowed: frozenset[str], purpose: str) -> None:
    """Refuse a column that is not whitelisted for ``purpose`` (sort, filter)."""
    if name not in allowed:
        choices = ", ".join(sorted(allowed)) or "none"
        raise InvalidQueryError(f"cannot {purpose} by {name!r}; allowed: {choices}")


class Repository(Generic[ModelT]):
    """Async CRUD for one mapped class, bound to one ``AsyncSession``.

    Subclass it with the model as the type argument; the model is taken from there.

    Attributes:
        model: the mapped class (derived from ``Repository[Model]``).
        sortable: columns allowed in ``order_by``.
        filterable: columns allowed in ``filters`` (with ``__lt``, ``__gte``, ``__in``, ...).
        default_order: the order used when none is asked for (defaults to the primary key).
        default_page_size: ``limit`` when none is given.
        max_page_size: the largest ``limit`` accepted.
    """

    model: ClassVar[type[Any]]
    sortable: ClassVar[frozenset[str]] = frozenset()
    filterable: ClassVar[frozenset[str]] = frozenset()
    default_order: ClassVar[tuple[str, ...]] = ()
    default_page_size: ClassVar[int] = 50
    max_page_size: ClassVar[int] = 100

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Repository:
                (model,) = get_args(base)
                if isinstance(model, type):
                    cls.model = model
        if "model" in cls.__dict__ or hasattr(cls, "model"):
            columns = set(inspect(cls.model).columns.keys())
            unknown = (set(cls.sortable) | set(cls.filterable)) - columns
            if unknown:
                raise TypeError(f"{cls.__name__} whitelists unknown columns: {sorted(unknown)}")
            if not cls.default_order:
                cls.default_order = tuple(column.key for column in inspect(cls.model).primary_key)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, ident: Any) -> ModelT | None:
        """The object with this primary key, or None."""
        return cast("ModelT | None", await self.session.get(self.model, ident))

    async def get_many(self, idents: Iterable[Any]) -> list[ModelT]:
        """The objects with these primary keys, in the order asked for; missing ones left out."""
        wanted = list(idents)
        if not wanted:
            return []
        (key,) = inspect(self.model).primary_key
        rows = await self.session.scalars(select(self.model).where(key.in_(wanted)))
        by_key = {getattr(row, key.key): row for row in rows}
        return [by_key[ident] for ident in wanted if ident in by_key]

    async def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[ModelT]:
        """A page of objects.

        Args:
            filters: ``{"column": value}`` for equality, or ``{"column__op": value}`` with
                ``op`` one of ``eq ne lt lte gt gte in``; only ``filterable`` columns.
            order_by: ``"column"`` or ``"-column"`` (descending), or a sequence of them; only
                ``sortable`` columns. The primary key is appended so pages are stable.
            limit: page size, 1 to ``max_page_size`` (default ``default_page_size``).
            offset: rows to skip, >= 0.

        Raises:
            InvalidQueryError: a column, operator, limit or offset that is not allowed, or a
                filter value the column's type cannot hold (naming the filter).
        """
        page = check_page(limit, offset, default=self.default_page_size, maximum=self.max_page_size)
        statement = self._filtered(select(self.model), filters)
        statement = statement.order_by(*self._ordering(order_by)).limit(page).offset(offset)
        return list(await self.session.scalars(statement))

    async def count(self, *, filters: Mapping[str, Any] | None = None) -> int:
        """How many objects match ``filters`` (same rules as :meth:`list`)."""
        statement = self._filtered(select(func.count()).select_from(self.model), filters)
        return int(await self.session.scalar(statement) or 0)

    async def add(self, obj: ModelT) -> ModelT:
        """Add an object and flush, so defaults and the primary key are filled in."""
        self.session.add(obj)
        await self.session.flush()
        return obj

    async def add_many(self, objs: Iterable[ModelT]) -> builtins.list[ModelT]:
        """Add several objects in one flush."""
        added = list(objs)
        self.session.add_all(added)
        await self.session.flush()
        return added

    async def update(self, obj_or_ident: Any, /, **values: Any) -> ModelT | None:
        """Set ``values`` on an object (given, or looked up by primary key) and flush.

        Returns:
            The updated object, or None when no object has that primary key.

        Raises:
            InvalidQueryError: a name in ``values`` is not a column of the model.
        """
        columns = set(inspect(self.model).columns.keys())
        unknown = set(values) - columns
        if unknown:
            raise InvalidQueryError(f"unknown columns: {sorted(unknown)}")
        obj = await self._resolve(obj_or_ident)
        if obj is None:
            return None
        for name, value in values.items():
            setattr(obj, name, value)
        await self.session.flush()
        return obj

    async def delete(self, obj_or_ident: Any, /) -> bool:
        """Delete an object (given, or looked up by primary key) and flush.

        Returns:
            False when no object has that primary key.
        """
        obj = await self._resolve(obj_or_ident)
        if obj is None:
            return False
        await self.session.delete(obj)
        await self.session.flush()
        return True

    async def _resolve(self, obj_or_ident: Any) -> ModelT | None:
        if isinstance(obj_or_ident, self.model):
            return cast("ModelT", obj_or_ident)
        return await self.get(obj_or_ident)

    def _column(self, name: str, allowed: frozenset[str], purpose: str) -> Any:
        check_allowed(name, allowed, purpose)
        return getattr(self.model, name)

    def _filtered(self, statement: Select[Any], filters: Mapping[str, Any] | None) -> Select[Any]:
        for key, value in (filters or {}).items():
            name, _, operator = key.partition("__")
            compare = _OPERATORS.get(operator or "eq")
            if compare is None:
                raise InvalidQueryError(
                    f"unknown filter operator {operator!r}; use one of {sorted(_OPERATORS)}"
                )
            column = self._column(name, self.filterable, "filter")
            if operator == "in":
                check_values(column.type, value, key)
            else:
                check_value(column.type, value, key)
            statement = statement.where(compare(column, value))
        return statement

    def _ordering(self, order_by: str | Sequence[str] | None) -> builtins.list[Any]:
        fields = [order_by] if isinstance(order_by, str) else list(order_by or ())
        clauses: builtins.list[Any] = []
        named: set[str] = set()
        for field in fields:
            descending = field.startswith("-")
            name = field.removeprefix("-")
            column = self._column(name, self.sortable, "sort")
            clauses.append(column.desc() if descending else column.asc())
            named.add(name)
        for name in self.default_order:
            if name not in named:
                clauses.append(getattr(self.model, name).asc())
        return clauses
