"""``Repository.add`` of a plain new instance runs its INSERT without the ORM's flush
(``asyncdal.orm._inserts``): the same row and the same instance as the flush makes, every
statement listener sees it, and anything the flush would do more falls back to the flush."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    DDL,
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    String,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
)
from sqlalchemy.orm.exc import UnmappedInstanceError

import asyncdal.engine._driver as driver_module
from asyncdal import (
    ConnectionLostError,
    Database,
    DeadlineExceededError,
    Repository,
    UniqueViolationError,
    deadline,
)
from asyncdal.engine._scope import RequestScope, request_scope
from asyncdal.orm import _repository
from asyncdal.orm._inserts import insert_plan
from asyncdal.testing import assert_max_queries
from catalog.models import Product
from catalog.repositories import ProductRepository
from tests.conftest import plain

_SUFFIX = uuid.uuid4().hex[:8]


class Base(DeclarativeBase):
    pass


class Gadget(Base):
    """Every kind of column the quick insert handles."""

    __tablename__ = f"ins_gadgets_{_SUFFIX}"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    note: Mapped[str | None] = mapped_column(String(50))
    quantity: Mapped[int] = mapped_column(Integer, default=3)
    data: Mapped[Any] = mapped_column(JSONB, nullable=True)
    made_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Keyed(Base):
    """A primary key the application gives (no RETURNING needed)."""

    __tablename__ = f"ins_keyed_{_SUFFIX}"

    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    label: Mapped[str | None] = mapped_column(String(50))


class Stamped(Base):
    """A Python callable default: only the flush computes it."""

    __tablename__ = f"ins_stamped_{_SUFFIX}"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    token: Mapped[str] = mapped_column(String(40), default=lambda: uuid.uuid4().hex)


class Versioned(Base):
    __tablename__ = f"ins_versioned_{_SUFFIX}"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Parent(Base):
    __tablename__ = f"ins_parents_{_SUFFIX}"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    children: Mapped[list[Child]] = relationship(back_populates="parent", lazy="raise")


class Child(Base):
    __tablename__ = f"ins_children_{_SUFFIX}"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey(Parent.id))
    parent: Mapped[Parent | None] = relationship(back_populates="children", lazy="raise")


class Lazy(Base):
    """Server defaults the flush does not fetch (expired instead)."""

    __tablename__ = f"ins_lazy_{_SUFFIX}"
    __mapper_args__ = {"eager_defaults": False}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    made_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Slow(Base):
    """A trigger makes its INSERT take seconds."""

    __tablename__ = f"ins_slow_{_SUFFIX}"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)


for ddl in (
    "CREATE FUNCTION %(table)s_sleep() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_sleep(10); RETURN NEW; END $$",
    "CREATE TRIGGER %(table)s_sleep BEFORE INSERT ON %(table)s "
    "FOR EACH ROW EXECUTE FUNCTION %(table)s_sleep()",
):
    event.listen(Slow.__table__, "after_create", DDL(ddl))
event.listen(Slow.__table__, "after_drop", DDL("DROP FUNCTION IF EXISTS %(table)s_sleep()"))


class Gadgets(Repository[Gadget]):
    pass


@pytest.fixture
async def db(make_database: Callable[..., Database]) -> AsyncIterator[Database]:
    database = make_database()
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield database
    finally:
        async with database.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
        await database.dispose()


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the flushes Repository.add falls back to."""
    counted: list[int] = []
    real = _repository.flush

    async def counting(session: Any) -> None:
        counted.append(1)
        await real(session)

    monkeypatch.setattr(_repository, "flush", counting)
    return counted


def _snapshot(obj: Any) -> dict[str, Any]:
    """What a caller can see of an instance, without the values the server makes anew."""
    state = inspect(obj)
    return {
        "persistent": state.persistent,
        "modified": state.modified,
        "expired": sorted(state.expired_attributes),
        "loaded": sorted(key for key in state.dict if not key.startswith("_")),
        "history": [key for key in state.attrs.keys() if state.attrs[key].history.has_changes()],  # noqa: SIM118
    }


async def _added_both_ways(
    db: Database, make: Callable[[str], Any]
) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The instance (and its row) ``make`` gives, added by the quick path and by the flush."""
    quick, flushed = make("quick"), make("flushed")
    async with db.unit_of_work() as uow:
        session = uow.session
        await Repository(session).add(quick)
        assert quick in session.identity_map.values()
        assert not session.new
        assert not session.dirty
        session.add(flushed)
        await session.flush()
        rows = {}
        for obj in (quick, flushed):
            table = inspect(obj).mapper.local_table
            key = inspect(obj).identity[0]
            row = (
                await session.execute(select(table).where(table.primary_key.columns[0] == key))
            ).one()
            rows[id(obj)] = dict(row._mapping)
        await uow.commit()
    return quick, flushed, rows[id(quick)], rows[id(flushed)]


def _without(values: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key not in keys}


@pytest.mark.parametrize(
    "given",
    [
        {"note": "n", "quantity": 5, "data": {"a": 1}},
        {},
        {"quantity": None, "note": None},
        {"data": None},
    ],
    ids=["all-given", "none-given", "none-for-defaults", "json-null"],
)
async def test_the_quick_insert_makes_the_row_and_instance_the_flush_makes(
    db: Database, flushes: list[int], given: dict[str, Any]
) -> None:
    quick, flushed, quick_row, flushed_row = await _added_both_ways(
        db, lambda name: Gadget(name=f"{name}-{uuid.uuid4().hex[:6]}", **given)
    )
    assert flushes == []  # the quick path ran (the flush only for the other one)
    assert _snapshot(quick) == _snapshot(flushed)
    assert _without(quick_row, "id", "name", "made_at") == _without(
        flushed_row, "id", "name", "made_at"
    )
    assert (quick.note, quick.quantity, quick.data) == (
        flushed.note,
        flushed.quantity,
        flushed.data,
    )
    assert quick.id == quick_row["id"]
    assert quick.made_at == quick_row["made_at"]


async def test_a_given_primary_key_is_kept(db: Database, flushes: list[int]) -> None:
    quick, flushed, quick_row, _ = await _added_both_ways(
        db, lambda name: Keyed(key=f"{name}-{uuid.uuid4().hex[:6]}")
    )
    assert flushes == []
    assert _snapshot(quick) == _snapshot(flushed)
    assert quick_row == {"key": quick.key, "label": None}


async def test_the_catalogs_product_takes_the_quick_path_and_is_usable_after_commit(
    db: Database, flushes: list[int]
) -> None:
    sku = f"ins-{uuid.uuid4().hex[:8]}"
    try:
        async with db.unit_of_work() as uow:
            products = uow.repository(ProductRepository)
            with assert_max_queries(1, db) as log:
                product = await products.add(Product(sku=sku, name="Lamp", price=Decimal("9.5")))
            assert "INSERT INTO products" in log.statements[0]
            assert product.id is not None
            assert product.created_at is not None
            assert product.price == Decimal("9.5")
            assert await products.get(product.id) is product
            product.name = "Desk lamp"
            assert await products.update(product, price=Decimal("10")) is product
            await uow.commit()
        assert flushes == [1]  # update's, not add's
        assert product.name == "Desk lamp"
        async with db.read_only_unit_of_work() as uow:
            stored = await uow.repository(ProductRepository).get(product.id)
            assert stored is not None
            assert (stored.name, stored.price) == ("Desk lamp", Decimal("10.00"))
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("DELETE FROM products WHERE sku = :sku"), {"sku": sku})
            await uow.commit()


async def test_a_duplicate_is_a_unique_violation_and_leaves_the_session_as_a_failed_flush(
    db: Database, flushes: list[int]
) -> None:
    name = f"dup-{uuid.uuid4().hex[:6]}"
    async with db.unit_of_work() as uow:
        await uow.repository(Gadgets).add(Gadget(name=name))
        await uow.commit()
    async with db.unit_of_work() as uow:
        gadgets = uow.repository(Gadgets)
        second = Gadget(name=name)
        with pytest.raises(UniqueViolationError):
            await gadgets.add(second)
        assert inspect(second).transient
        assert flushes == []
        with pytest.raises(PendingRollbackError):
            await uow.session.execute(select(1))
        await uow.rollback()
        third = await gadgets.add(Gadget(name=f"{name}-third"))
        assert inspect(third).persistent
        await uow.commit()


async def test_a_rolled_back_insert_leaves_the_instance_transient_as_the_flush_does(
    db: Database,
) -> None:
    async with db.unit_of_work() as uow:
        gadget = await uow.repository(Gadgets).add(Gadget(name=f"rb-{uuid.uuid4().hex[:6]}"))
        assert inspect(gadget).persistent
        await uow.rollback()
        assert inspect(gadget).transient
        assert gadget not in uow.session


async def test_the_statement_counting_net_sees_the_insert(
    make_database: Callable[..., Database], db: Database
) -> None:
    counted = make_database(max_queries_per_request=5)
    request = RequestScope()
    try:
        with request_scope(request):
            async with counted.unit_of_work() as uow:
                await uow.repository(Gadgets).add(Gadget(name=f"net-{uuid.uuid4().hex[:6]}"))
                await uow.rollback()
        assert request.total == 1
        assert "INSERT INTO ins_gadgets" in request.most_repeated()[0]
    finally:
        await counted.dispose()


async def test_a_deadline_cancels_a_slow_insert_on_the_server(
    db: Database, flushes: list[int]
) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceededError):
        async with deadline(0.3), db.unit_of_work() as uow:
            await Repository[Slow](uow.session).add(Slow())
    assert asyncio.get_running_loop().time() - started < 5
    assert flushes == []
    async with db.read_only_unit_of_work() as uow:
        assert await uow.session.scalar(select(func.count()).select_from(Slow)) == 0


# Fall-backs: each is something the flush does more than one INSERT would.


async def test_a_session_flush_listener_makes_it_flush(db: Database, flushes: list[int]) -> None:
    seen: list[Any] = []
    async with db.unit_of_work() as uow:
        event.listen(uow.session.sync_session, "before_flush", lambda s, *a: seen.append(s))
        gadget = await uow.repository(Gadgets).add(Gadget(name=f"bf-{uuid.uuid4().hex[:6]}"))
        assert gadget.id is not None
        await uow.rollback()
    assert flushes == [1]
    assert seen


async def test_a_mapper_insert_listener_makes_it_flush(db: Database, flushes: list[int]) -> None:
    seen: list[Any] = []

    def before_insert(mapper: Any, connection: Any, target: Any) -> None:
        seen.append(target)

    event.listen(Gadget, "before_insert", before_insert)
    try:
        async with db.unit_of_work() as uow:
            gadget = await uow.repository(Gadgets).add(Gadget(name=f"bi-{uuid.uuid4().hex[:6]}"))
            await uow.rollback()
    finally:
        event.remove(Gadget, "before_insert", before_insert)
    assert flushes == [1]
    assert seen == [gadget]


async def test_other_pending_changes_make_it_flush_them_all(
    db: Database, flushes: list[int]
) -> None:
    async with db.unit_of_work() as uow:
        other = Keyed(key=f"pending-{uuid.uuid4().hex[:6]}")
        uow.session.add(other)
        await uow.repository(Gadgets).add(Gadget(name=f"pe-{uuid.uuid4().hex[:6]}"))
        assert inspect(other).persistent
        await uow.rollback()
    assert flushes == [1]


async def test_a_relationship_set_makes_it_flush_and_cascade(
    db: Database, flushes: list[int]
) -> None:
    async with db.unit_of_work() as uow:
        child = Child(parent=Parent())
        await Repository[Child](uow.session).add(child)
        assert child.parent_id is not None
        await uow.rollback()
    assert flushes == [1]


async def test_a_sql_expression_as_a_value_makes_it_flush(db: Database, flushes: list[int]) -> None:
    async with db.unit_of_work() as uow:
        gadget = Gadget(name=f"ex-{uuid.uuid4().hex[:6]}", quantity=func.abs(-4))
        await uow.repository(Gadgets).add(gadget)
        assert (
            await uow.session.scalar(select(Gadget.quantity).where(Gadget.id == gadget.id))
        ) == 4
        await uow.rollback()
    assert flushes == [1]


@pytest.mark.parametrize("model", [Stamped, Versioned, Lazy])
async def test_models_only_the_flush_inserts_right_make_it_flush(
    db: Database, flushes: list[int], model: type[Any]
) -> None:
    assert insert_plan(inspect(model)) is None
    async with db.unit_of_work() as uow:
        obj = model(version=1) if model is Versioned else model()
        await Repository[Any](uow.session).add(obj)
        assert inspect(obj).persistent
        await uow.rollback()
    assert flushes == [1]


async def test_an_unmapped_object_is_refused_as_before(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(UnmappedInstanceError):
            await Repository[Any](uow.session).add(object())


async def test_a_read_only_unit_of_work_still_refuses_the_add(db: Database) -> None:
    from asyncdal import ReadOnlyError

    async with db.read_only_unit_of_work() as uow:
        with pytest.raises(ReadOnlyError):
            await uow.repository(Gadgets).add(Gadget(name="ro"))


# On the driver connection (asyncdal.engine._driver): same answers as through the engine.


@pytest.fixture
def driver_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement sent on the driver path."""
    sent: list[str] = []
    original = driver_module._fetchrow

    async def counted(adapter: Any, mutex: Any, driver: Any, sql: str, parameters: Any) -> Any:
        sent.append(sql)
        return await original(adapter, mutex, driver, sql, parameters)

    monkeypatch.setattr(driver_module, "_fetchrow", counted)
    return sent


@pytest.fixture
async def sql_connection(test_database_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own to the test database."""
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def through(db: Database, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Which path the INSERT takes: the engine one when a statement listener of the
    application's has no stand-in on the driver."""
    path: str = request.param
    if path == "driver":
        yield path
        return
    sync_engine = db.engine.sync_engine

    def listener(*args: Any) -> None:
        pass

    event.listen(sync_engine, "before_cursor_execute", listener)
    try:
        yield path
    finally:
        event.remove(sync_engine, "before_cursor_execute", listener)


async def test_inserts_without_conversions_run_on_the_driver(
    db: Database, driver_statements: list[str]
) -> None:
    sku = f"drv-{uuid.uuid4().hex[:8]}"
    async with db.unit_of_work() as uow:
        product = await uow.repository(ProductRepository).add(
            Product(sku=sku, name="Lamp", price=Decimal("9.5"))
        )
        keyed = await Repository[Keyed](uow.session).add(Keyed(key=sku, label="k"))
        # A JSONB value is converted on the way (a bind processor), a Python default computed
        # at execution: through the engine.
        gadget = await uow.repository(Gadgets).add(Gadget(name=sku))
        row = (
            await uow.session.execute(
                text("SELECT id, created_at, updated_at FROM products WHERE sku = :sku"),
                {"sku": sku},
            )
        ).one()
        assert (product.id, product.created_at, product.updated_at) == tuple(row)
        assert inspect(product).persistent
        assert not inspect(product).modified
        assert inspect(keyed).persistent
        assert gadget.quantity == 3
        await uow.rollback()
    assert [sql.split()[2] for sql in driver_statements] == ["products", Keyed.__tablename__]


@pytest.mark.parametrize("through", ["driver", "engine"], indirect=True)
async def test_a_duplicate_on_either_path_leaves_the_session_as_a_failed_flush(
    db: Database, through: str, driver_statements: list[str]
) -> None:
    sku = f"dupd-{uuid.uuid4().hex[:8]}"
    async with db.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        await products.add(Product(sku=sku, name="one", price=Decimal(1)))
        second = Product(sku=sku, name="two", price=Decimal(2))
        with pytest.raises(UniqueViolationError):
            await products.add(second)
        assert inspect(second).transient
        with pytest.raises(PendingRollbackError):
            await uow.session.execute(select(1))
        await uow.rollback()
        assert (await uow.session.execute(select(1))).scalar_one() == 1
    assert len(driver_statements) == (2 if through == "driver" else 0)


@pytest.mark.parametrize("through", ["driver", "engine"], indirect=True)
async def test_a_connection_lost_on_either_path_leaves_the_session_as_a_failed_flush(
    db: Database, sql_connection: asyncpg.Connection, through: str, driver_statements: list[str]
) -> None:
    backend = text("SELECT pg_backend_pid()")
    async with db.unit_of_work() as uow:
        pid = (await uow.session.execute(backend)).scalar_one()
        await sql_connection.execute("SELECT pg_terminate_backend($1)", pid)
        product = Product(sku=f"lost-{uuid.uuid4().hex[:8]}", name="x", price=Decimal(1))
        with pytest.raises(ConnectionLostError):
            await uow.repository(ProductRepository).add(product)
        assert inspect(product).transient
        with pytest.raises(PendingRollbackError):
            await uow.session.execute(select(1))
        await uow.rollback()
        assert (await uow.session.execute(backend)).scalar_one() != pid
    assert len(driver_statements) == (1 if through == "driver" else 0)
