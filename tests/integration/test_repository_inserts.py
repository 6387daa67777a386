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
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
)
from sqlalchemy.orm.exc import UnmappedInstanceError

from asyncdal import Database, DeadlineExceededError, Repository, UniqueViolationError, deadline
from asyncdal.engine._scope import RequestScope, request_scope
from asyncdal.orm import _repository
from asyncdal.orm._inserts import insert_plan
from asyncdal.testing import assert_max_queries
from catalog.models import Product
from catalog.repositories import ProductRepository

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
