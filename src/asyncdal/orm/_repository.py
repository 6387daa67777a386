"""``Repository[Model]``: typed, generic async CRUD over one mapped class.

Sorting and filtering accept only the columns a repository whitelists, so a sort parameter such
as ``name; drop table products`` is refused with :class:`~asyncdal.errors.InvalidQueryError`
(a 422 through the FastAPI integration) and never reaches SQL.

Example:
    >>> class ProductRepository(Repository[Product]):
    ...     sortable = frozenset({"id", "name", "price"})
    ...     filterable = frozenset({"sku", "name", "price"})
    >>> async with db.unit_of_work() as uow:
    ...     products = uow.repository(ProductRepository)
    ...     cheap = await products.list(filters={"price__lt": 10}, order_by="-price", limit=20)
    ...     page = await products.page(ListQuery(filters={"name__icontains": "lamp"}))
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    TypeVar,
    cast,
    get_args,
    get_origin,
    overload,
)

from sqlalchemy import ColumnElement, Select, and_, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ExecutableOption

from asyncdal.errors import InvalidQueryError, NotFoundError
from asyncdal.orm._cursors import can_encode, encode_cursor
from asyncdal.orm._driver_reads import DECLINED, count_rows, driver_reads, get_by_key, list_rows
from asyncdal.orm._filters import Condition, check_key, parse_filters, where_clause
from asyncdal.orm._inserts import insert_one
from asyncdal.orm._loading import Load, check_rows_load, loader_options
from asyncdal.orm._ordering import after_clause, order_clauses
from asyncdal.orm._pages import ListQuery, Page, PageRequest, plan_page
from asyncdal.orm._upsert import plan_upsert, upsert_statement
from asyncdal.orm._values import integer_maximum
from asyncdal.orm._versions import check_expected_version, flush

__all__ = ["Repository"]

ModelT = TypeVar("ModelT")


class Repository(Generic[ModelT]):
    """Async CRUD for one mapped class, bound to one ``AsyncSession``.

    Subclass it with the model as the type argument; the model is taken from there. Custom
    methods written with the public methods below also run on the in-memory fake
    (``asyncdal.testing.InMemoryRepository.like``).

    Attributes:
        model: the mapped class (derived from ``Repository[Model]``).
        sortable: columns allowed in ``order_by``.
        filterable: columns allowed in ``filters`` (see :meth:`list` for the operators).
        default_order: fields (``"name"``, ``"-created_at"``) sorted by after those asked
            for; the primary key always comes last, so every order is total.
        default_page_size: ``limit`` when none is given, 1 to ``max_page_size`` (checked
            when the class is defined: a ``TypeError`` names both).
        max_page_size: the largest ``limit`` accepted.
        default_load: relationships loaded when a method's ``load`` is None.
    """

    model: ClassVar[type[Any]]
    sortable: ClassVar[frozenset[str]] = frozenset()
    filterable: ClassVar[frozenset[str]] = frozenset()
    default_order: ClassVar[tuple[str, ...]] = ()
    default_page_size: ClassVar[int] = 50
    max_page_size: ClassVar[int] = 100
    default_load: ClassVar[tuple[str | ExecutableOption, ...]] = ()
    # The largest value of a one-column integer primary key (None for any other key).
    _largest_key: ClassVar[int | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is Repository:
                (model,) = get_args(base)
                if isinstance(model, type):
                    cls.model = model
        if hasattr(cls, "model"):
            columns = set(inspect(cls.model).columns.keys())
            ordered = {field.removeprefix("-") for field in cls.default_order}
            unknown = (set(cls.sortable) | set(cls.filterable) | ordered) - columns
            if unknown:
                raise TypeError(f"{cls.__name__} whitelists unknown columns: {sorted(unknown)}")
            if not cls.default_order:
                cls.default_order = tuple(column.key for column in inspect(cls.model).primary_key)
            keys = inspect(cls.model).primary_key
            cls._largest_key = integer_maximum(keys[0].type) if len(keys) == 1 else None
        # Here, not at the first list() without a limit: there it would be a 422 to a client
        # for what the class says.
        if not 1 <= cls.default_page_size <= cls.max_page_size:
            raise TypeError(
                f"{cls.__name__}: default_page_size ({cls.default_page_size}) must be between 1 "
                f"and max_page_size ({cls.max_page_size})"
            )

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, ident: Any, *, load: Load = None) -> ModelT | None:
        """The object with this primary key, or None.

        Args:
            ident: the primary key (a tuple for a composite one).
            load: relationships to load with it (names or loader options; see :meth:`list`).
        """
        # Nothing to load, the common case, is told without building the (empty) options.
        options = self._options(load) if load is not None or self.default_load else ()
        if not options:
            key = self._key(ident)
            reads = driver_reads(self.session)
            if reads is not None and len(key) == 1:
                found = await get_by_key(reads, self.session, self.model, key[0])
                if found is not DECLINED:
                    return cast("ModelT | None", found)
            return cast("ModelT | None", await self.session.get(self.model, key))
        # A SELECT, not session.get: an object already in the session still gets its
        # relationships loaded, where session.get would hand it over without a query.
        statement = select(self.model).where(self._key_matches(ident)).options(*options)
        return cast("ModelT | None", (await self.session.scalars(statement)).one_or_none())

    async def get_one(self, ident: Any, *, load: Load = None) -> ModelT:
        """The object with this primary key.

        Raises:
            NotFoundError: no object has it (404 through ``asyncdal.fastapi.setup``).

        Example:
            >>> post = await posts.get_one(post_id, load=["author"])
        """
        obj = await self.get(ident, load=load)
        if obj is None:
            name = self.model.__name__
            raise NotFoundError(f"{name} {ident!r} not found", model=name, ident=ident)
        return obj

    async def get_many(self, idents: Iterable[Any], *, load: Load = None) -> builtins.list[ModelT]:
        """The objects with these primary keys, in the order asked for; missing ones left out."""
        wanted = list(idents)
        if not wanted:
            return []
        (key,) = inspect(self.model).primary_key
        wanted = [check_key(self.model, ident)[0] for ident in wanted]
        statement = select(self.model).where(key.in_(wanted)).options(*self._options(load))
        rows = await self.session.scalars(statement)
        by_key = {getattr(row, key.key): row for row in rows}
        return [by_key[ident] for ident in wanted if ident in by_key]

    @overload
    async def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        load: Load = None,
        rows: Literal[False] = False,
    ) -> builtins.list[ModelT]: ...

    @overload
    async def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        rows: Literal[True],
    ) -> builtins.list[dict[str, Any]]: ...

    async def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        load: Load = None,
        rows: bool = False,
    ) -> builtins.list[ModelT] | builtins.list[dict[str, Any]]:
        """A page of objects.

        Args:
            filters: ``{"column": value}`` for equality, or ``{"column__op": value}`` with
                ``op`` one of ``eq ne lt lte gt gte in isnull`` and, on text columns,
                ``contains icontains startswith istartswith endswith iendswith`` (``%`` and
                ``_`` match themselves); only ``filterable`` columns. NULL follows SQL: a
                comparison never matches a NULL column (``ne`` included); ask with
                ``column__isnull=True`` or ``column=None``.
            order_by: ``"column"`` or ``"-column"`` (descending), or a sequence of them; only
                ``sortable`` columns. NULLs sort last ascending, first descending. The
                ``default_order`` and the primary key follow, so pages are stable.
            limit: page size, 1 to ``max_page_size`` (default ``default_page_size``).
            offset: rows to skip, >= 0.
            load: relationships to load with the objects: names (``"author"``,
                ``"comments.author"``), each loaded with ``selectinload``, or loader options
                (``joinedload(Post.author)``). None: ``default_load``.
            rows: plain dicts of the model's column attributes instead of ORM instances:
                nothing tracked by the session, no relationships; for an answer that only
                serializes the page, at a fraction of the CPU per row.

        Raises:
            InvalidQueryError: a column, operator, limit, offset or relationship that is not
                allowed, or a filter value the column cannot be compared with (naming it).
            TypeError: ``load`` with ``rows=True`` (rows have no relationships).

        Example:
            >>> cheap = await products.list(order_by="price", limit=20, rows=True)
            >>> cheap[0]["name"]
            'Pencil'
        """
        request = plan_page(self, filters=filters, order_by=order_by, limit=limit, offset=offset)
        items, _ = await self._listed(request, load=load, count=False, rows=rows)
        return items

    async def count(self, *, filters: Mapping[str, Any] | None = None) -> int:
        """How many objects match ``filters`` (same rules as :meth:`list`)."""
        conditions = parse_filters(self.model, self.filterable, filters)
        reads = driver_reads(self.session) if not conditions else None
        if reads is not None:
            counted = await count_rows(reads, self.model)
            if counted is not DECLINED:
                return int(counted)
        statement = select(func.count()).select_from(self.model).where(*self._where(conditions))
        return int(await self.session.scalar(statement) or 0)

    @overload
    async def list_and_count(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        load: Load = None,
        rows: Literal[False] = False,
    ) -> tuple[builtins.list[ModelT], int]: ...

    @overload
    async def list_and_count(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        rows: Literal[True],
    ) -> tuple[builtins.list[dict[str, Any]], int]: ...

    async def list_and_count(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        load: Load = None,
        rows: bool = False,
    ) -> tuple[builtins.list[ModelT], int] | tuple[builtins.list[dict[str, Any]], int]:
        """A page of objects and how many match in all, in one round trip.

        Same arguments as :meth:`list` (``rows=True`` too). The count rides along as a scalar
        subquery; only a page past the end (no rows, ``offset > 0``) costs a second query for
        it.

        Example:
            >>> posts, total = await repository.list_and_count(filters={"draft": False})
        """
        request = plan_page(self, filters=filters, order_by=order_by, limit=limit, offset=offset)
        items, total = await self._listed(request, load=load, count=True, rows=rows)
        assert total is not None
        return items, total

    async def _listed(
        self, request: PageRequest, *, load: Load, count: bool, rows: bool
    ) -> tuple[builtins.list[Any], int | None]:
        """The page of :meth:`list` and :meth:`list_and_count`, on the driver when it can."""
        check_rows_load(load, rows)
        reads = driver_reads(self.session)
        if reads is not None and not request.conditions and (rows or not self._options(load)):
            found = await list_rows(
                reads,
                self.session,
                self.model,
                request.keys,
                request.limit,
                request.offset,
                count=count,
                as_dicts=rows,
            )
            if found is not DECLINED:
                return cast("tuple[builtins.list[Any], int | None]", found)
        items, total, _ = await self._fetch(request, load=load, count=count, peek=False, rows=rows)
        return items, total

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
        """A :class:`~asyncdal.Page`: items, total, and the cursor of the next page.

        Pages by offset, or by keyset when ``cursor`` (a previous ``Page.next_cursor``) is
        given: a cursor page starts right after the last row of the previous one, however
        many rows were added or removed before it, and costs an index seek, not a skip.

        Args:
            query: a :class:`~asyncdal.ListQuery` (e.g. from ``asyncdal.fastapi.list_query``).
            filters: added to the query's filters (same key: this one wins), e.g. to scope a
                list to the current user.
            order_by: as in :meth:`list`, when not in ``query``.
            limit: as in :meth:`list`, when not in ``query``.
            offset: as in :meth:`list`, when not in ``query``.
            cursor: continue after the page that gave it; not with ``offset``.
            load: as in :meth:`list`.
            count: count the matching rows (``Page.total``); False leaves it None.

        Raises:
            InvalidQueryError: as :meth:`list`, or a cursor that is malformed or was made for
                another order or other filters.
        """
        request = plan_page(
            self,
            query=query,
            filters=filters,
            order_by=order_by,
            limit=limit,
            offset=offset,
            cursor=cursor,
        )
        items, total, more = await self._fetch(request, load=load, count=count, peek=True)
        next_cursor = None
        if more and can_encode(self.model, request.keys):
            next_cursor = encode_cursor(self.model, request.keys, items[-1], request.digest)
        return Page(
            items=items,
            total=total,
            limit=request.limit,
            offset=None if request.position is not None else request.offset,
            next_cursor=next_cursor,
        )

    async def add(self, obj: ModelT) -> ModelT:
        """Add an object and flush, so defaults and the primary key are filled in."""
        # A new object of a plain model in a clean session: its INSERT alone, without the
        # flush's planning (asyncdal.orm._inserts); anything else flushes.
        if not await insert_one(self.session, obj):
            self.session.add(obj)
            await flush(self.session)
        return obj

    async def add_many(self, objs: Iterable[ModelT]) -> builtins.list[ModelT]:
        """Add several objects in one flush."""
        added = list(objs)
        self.session.add_all(added)
        await flush(self.session)
        return added

    async def update(
        self, obj_or_ident: Any, /, *, expected_version: Any = None, **values: Any
    ) -> ModelT | None:
        """Set ``values`` on an object (given, or looked up by primary key) and flush.

        Args:
            obj_or_ident: the object, or its primary key.
            expected_version: the version the caller saw (e.g. from ``If-Match``); refused
                when the object is at another. Needs a version column.
            values: column values to set.

        Returns:
            The updated object, or None when no object has that primary key.

        Raises:
            InvalidQueryError: a name in ``values`` is not a column of the model.
            StaleVersionError: the object is not at ``expected_version``, or another
                transaction changed it since it was read (with a version column).
        """
        columns = set(inspect(self.model).columns.keys())
        unknown = set(values) - columns
        if unknown:
            raise InvalidQueryError(f"unknown columns: {sorted(unknown)}")
        obj = await self._resolve(obj_or_ident)
        if obj is None:
            return None
        check_expected_version(obj, expected_version)
        for name, value in values.items():
            setattr(obj, name, value)
        await flush(self.session)
        return obj

    async def delete(self, obj_or_ident: Any, /, *, expected_version: Any = None) -> bool:
        """Delete an object (given, or looked up by primary key) and flush.

        Returns:
            False when no object has that primary key.

        Raises:
            StaleVersionError: as :meth:`update`.
        """
        obj = await self._resolve(obj_or_ident)
        if obj is None:
            return False
        check_expected_version(obj, expected_version)
        await self.session.delete(obj)
        await flush(self.session)
        return True

    async def upsert(
        self,
        values: Mapping[str, Any],
        *,
        constraint: str,
        update: Iterable[str] | None = None,
    ) -> ModelT:
        """Insert a row, or update the one that has the same key in ``constraint``.

        Args:
            values: column values by attribute name; every column of the constraint needed.
            constraint: the name of a unique (or primary key) constraint of the table.
            update: the columns a conflict updates (default: every given column outside the
                constraint and the primary key; ``()``: none, returning the stored row as it
                is). The version column is bumped and ``onupdate`` columns are set when
                something is updated.

        Returns:
            The stored row as an ORM instance (the one in the session, refreshed, when it
            was loaded already).

        Raises:
            InvalidQueryError: an unknown column, a missing or NULL key column.
            ValueError: no unique constraint of that name.

        Example:
            >>> author = await authors.upsert(
            ...     {"email": "ada@example.com", "name": "Ada"}, constraint="uq_authors_email"
            ... )
        """
        (obj,) = await self.upsert_many([values], constraint=constraint, update=update)
        return obj

    async def upsert_many(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        constraint: str,
        update: Iterable[str] | None = None,
    ) -> builtins.list[ModelT]:
        """:meth:`upsert` for several rows in one statement; the objects in the rows' order.

        Raises:
            InvalidQueryError: as :meth:`upsert`, or two rows with the same key, or rows that
                name different columns.
        """
        plan = plan_upsert(self.model, list(rows), constraint, update)
        if not plan.rows:
            return []
        statement = upsert_statement(self.model, plan).returning(self.model)
        stored = await self.session.scalars(
            statement, execution_options={"populate_existing": True}
        )
        by_key = {tuple(getattr(obj, name) for name in plan.key): obj for obj in stored}
        return [by_key[plan.key_of(row)] for row in plan.rows]

    def _key(self, ident: Any) -> tuple[Any, ...]:
        """``ident`` as the primary key's values, checked (see ``check_key``); an integer in
        the range of a one-column integer key without a call (every ``get`` asks)."""
        largest = self._largest_key
        if largest is not None and type(ident) is int and -largest - 1 <= ident <= largest:
            return (ident,)
        return check_key(self.model, ident)

    def _options(self, load: Load) -> builtins.list[ExecutableOption]:
        return loader_options(self.model, self.default_load if load is None else load)

    def _where(self, conditions: Sequence[Condition]) -> builtins.list[ColumnElement[bool]]:
        return [where_clause(self.model, condition) for condition in conditions]

    def _key_matches(self, ident: Any) -> ColumnElement[bool]:
        keys = inspect(self.model).primary_key
        values = check_key(self.model, ident)
        clauses = [column == value for column, value in zip(keys, values, strict=True)]
        return and_(*clauses)

    async def _fetch(
        self, request: PageRequest, *, load: Load, count: bool, peek: bool, rows: bool = False
    ) -> tuple[builtins.list[Any], int | None, bool]:
        """One query: the page's rows (one more with ``peek``, to know whether more follow)
        and, with ``count``, the number of matching rows beside each; with ``rows``, dicts of
        the model's column attributes rather than instances."""
        where = self._where(request.conditions)
        keys = [prop.key for prop in inspect(self.model).column_attrs] if rows else []
        statement: Select[Any] = (
            select(*(getattr(self.model, key) for key in keys)) if rows else select(self.model)
        ).where(*where)
        if count:
            total = select(func.count()).select_from(self.model).where(*where).scalar_subquery()
            statement = statement.add_columns(total)
        if request.position is not None:
            statement = statement.where(after_clause(self.model, request.keys, request.position))
        statement = (
            statement.order_by(*order_clauses(self.model, request.keys))
            .limit(request.limit + 1 if peek else request.limit)
            .offset(request.offset)
            .options(*([] if rows else self._options(load)))
        )
        found = (await self.session.execute(statement)).unique().all()
        more = len(found) > request.limit
        found = found[: request.limit]
        items: builtins.list[Any] = (
            [dict(zip(keys, row, strict=False)) for row in found]
            if rows
            else [row[0] for row in found]
        )
        if not count:
            return items, None, more
        if found:
            return items, int(found[0][-1]), more
        if request.offset == 0 and request.position is None:
            return items, 0, more
        # Past the end (or at the end of a cursor): no row brought the count along.
        counted = select(func.count()).select_from(self.model).where(*where)
        return items, int(await self.session.scalar(counted) or 0), more

    async def _resolve(self, obj_or_ident: Any) -> ModelT | None:
        if isinstance(obj_or_ident, self.model):
            return cast("ModelT", obj_or_ident)
        return await self.get(obj_or_ident)
