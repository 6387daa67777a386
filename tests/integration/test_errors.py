"""The engine raises asyncdal's errors, not the driver's, for failures an application tells
apart (pool exhausted, conflicts, constraint violations, invalid values, timeouts, a lost
connection), outside FastAPI and on a real server; each keeps the driver's error as its cause,
and the classifiers (retry, breaker, outbox) still see through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy import exc, text
from sqlalchemy.engine import URL

from asyncdal import (
    ConflictError,
    ConnectionLostError,
    ConstraintViolationError,
    Database,
    DeadlockError,
    ForeignKeyViolationError,
    InvalidValueError,
    LockTimeoutError,
    PoolTimeoutError,
    QueryTimeoutError,
    ReadOnlyError,
    SerializationError,
    StatementTimeoutError,
    UniqueViolationError,
    UnitOfWork,
)
from asyncdal._translate import is_conflict, is_connection_failure, sqlstate
from asyncdal.outbox._connection import DATABASE_ERRORS, describe_database_error
from tests.conftest import plain

MakeDatabase = Callable[..., Database]
SECRET = "s3cret-value-7f1c"
"""A value that must never show in a message: the errors name problems, not values."""


@pytest.fixture
async def raw(test_database_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection that sets up the tables (and meddles, where a test needs it)."""
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    await connection.execute(
        """
        DROP TABLE IF EXISTS err_children, err_parents;
        CREATE TABLE err_parents (id int PRIMARY KEY, code text NOT NULL UNIQUE, n int NOT NULL);
        CREATE TABLE err_children (
            id int PRIMARY KEY,
            parent int NOT NULL CONSTRAINT err_children_parent_fk REFERENCES err_parents (id),
            size int CONSTRAINT err_children_size_positive CHECK (size > 0)
        );
        INSERT INTO err_parents VALUES (1, 'one', 0), (2, 'two', 0);
        """
    )
    try:
        yield connection
    finally:
        await connection.execute("DROP TABLE err_children, err_parents")
        await connection.close()


def driver_error(error: BaseException) -> BaseException:
    """The innermost cause: what asyncpg raised."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


async def test_an_exhausted_pool_raises_pool_timeout_error(make_database: MakeDatabase) -> None:
    db = make_database(pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        holder = await db.engine.connect()
        try:
            with pytest.raises(PoolTimeoutError) as raised:
                async with db.unit_of_work() as uow:
                    await uow.session.execute(text("SELECT 1"))
        finally:
            await holder.close()
        error = raised.value
        assert isinstance(error.__cause__, exc.TimeoutError)
        assert error.database == "main"
        assert error.retry_after == 1.0
        assert "'main'" in str(error)
        assert "pool is exhausted" in str(error)
        assert "pool size 1, overflow 0" in str(error)
        # The server is fine: not a connection failure (no breaker, no retry), not a conflict.
        assert not is_connection_failure(error)
        assert not is_conflict(error)
        assert db.breaker.state == "closed"
        async with db.unit_of_work() as uow:  # the connection is free again
            assert await uow.session.scalar(text("SELECT 1")) == 1
    finally:
        await db.dispose()


async def test_a_serialization_failure_at_a_statement(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database()
    try:
        with pytest.raises(SerializationError) as raised:
            async with db.unit_of_work() as uow:
                session = uow.session
                await session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
                await session.execute(text("SELECT n FROM err_parents WHERE id = 1"))
                await raw.execute("UPDATE err_parents SET n = n + 1 WHERE id = 1")  # commits
                await session.execute(text("UPDATE err_parents SET n = n + 10 WHERE id = 1"))
        error = raised.value
        assert isinstance(error, ConflictError)
        assert sqlstate(error) == "40001"
        assert isinstance(driver_error(error), asyncpg.SerializationError)
        assert is_conflict(error)
        assert not is_connection_failure(error)
    finally:
        await db.dispose()


async def test_a_serialization_failure_at_commit(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    """Two SERIALIZABLE units of work that each read what the other writes (write skew): the
    second COMMIT fails, and COMMIT's failure is translated as a statement's is."""
    db = make_database()

    async def begin(uow: UnitOfWork) -> None:
        await uow.session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
        await uow.session.execute(text("SELECT sum(n) FROM err_parents"))

    try:
        async with db.unit_of_work() as first, db.background_unit_of_work() as second:
            await begin(first)
            await begin(second)
            await first.session.execute(text("UPDATE err_parents SET n = 1 WHERE id = 1"))
            await second.session.execute(text("UPDATE err_parents SET n = 1 WHERE id = 2"))
            await first.commit()
            with pytest.raises(SerializationError) as raised:
                await second.commit()
        assert sqlstate(raised.value) == "40001"
        assert await raw.fetchval("SELECT sum(n) FROM err_parents") == 1
    finally:
        await db.dispose()


async def test_a_real_deadlock_raises_deadlock_error(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database()
    both_locked = asyncio.Barrier(2)

    async def lock(first: int, then: int) -> None:
        async with db.background_unit_of_work() as uow:
            session = uow.session
            # Detect it sooner than the default second (the tests' user is a superuser).
            await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
            await session.execute(
                text("UPDATE err_parents SET n = 1 WHERE id = :id"), {"id": first}
            )
            await both_locked.wait()
            await session.execute(text("UPDATE err_parents SET n = 2 WHERE id = :id"), {"id": then})
            await uow.commit()

    try:
        results = await asyncio.gather(lock(1, 2), lock(2, 1), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        assert len(failures) == 1, results
        error = failures[0]
        assert isinstance(error, DeadlockError)
        assert isinstance(error, ConflictError)
        assert is_conflict(error)
        assert isinstance(driver_error(error), asyncpg.DeadlockDetectedError)
        assert error.database == "main"
    finally:
        await db.dispose()


async def test_a_duplicate_key_raises_unique_violation_error(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database()
    await raw.execute("INSERT INTO err_parents VALUES (3, $1, 0)", SECRET)
    try:
        with pytest.raises(UniqueViolationError) as raised:
            async with db.unit_of_work() as uow:
                await uow.session.execute(
                    text("INSERT INTO err_parents VALUES (4, :code, 0)"), {"code": SECRET}
                )
        error = raised.value
        assert isinstance(error, ConstraintViolationError)
        assert error.constraint == "err_parents_code_key"
        assert error.table == "err_parents"
        assert error.columns == ("code",)
        assert error.sqlstate == "23505"
        assert "err_parents_code_key" in str(error)
        assert SECRET not in str(error)
        assert isinstance(driver_error(error), asyncpg.UniqueViolationError)
        # Tracebacks still show the statement (SQLAlchemy's own error did), not the values.
        assert error.__notes__ == ["[SQL: INSERT INTO err_parents VALUES (4, $1, 0)]"]
    finally:
        await db.dispose()


async def test_a_missing_parent_raises_foreign_key_violation_error(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database()
    try:
        with pytest.raises(ForeignKeyViolationError) as raised:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("INSERT INTO err_children VALUES (1, 424242, 1)"))
        error = raised.value
        assert error.constraint == "err_children_parent_fk"
        assert error.table == "err_children"
        assert error.columns == ("parent",)
        message = str(error)
        assert "err_children_parent_fk" in message
        assert "does not exist" in message
        assert "err_parents" in message
        assert "424242" not in message

        # The other way round: deleting a parent that is still referred to.
        await raw.execute("INSERT INTO err_children VALUES (2, 1, 1)")
        with pytest.raises(ForeignKeyViolationError, match="still referenced") as raised:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("DELETE FROM err_parents WHERE id = 1"))
        assert raised.value.constraint == "err_children_parent_fk"
    finally:
        await db.dispose()


async def test_other_constraints_raise_the_base_class(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database()
    try:
        with pytest.raises(ConstraintViolationError) as raised:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("INSERT INTO err_children VALUES (1, 1, -5)"))
        error = raised.value
        assert type(error) is ConstraintViolationError
        assert error.sqlstate == "23514"
        assert error.constraint == "err_children_size_positive"
        assert "check violation" in str(error)
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    ("statement", "parameters", "problem", "code"),
    [
        ("SELECT 9223372036854775807 + 1", {}, "out of range", "22003"),
        ("SELECT CAST(:x AS int)", {"x": 2**40}, "query argument $1", "22000"),
        ("SELECT CAST(CAST(:x AS text) AS date)", {"x": SECRET}, "type date", "22007"),
        ("SELECT CAST(CAST(:x AS text) AS int)", {"x": SECRET}, "type integer", "22P02"),
    ],
)
async def test_data_exceptions_raise_invalid_value_error(
    make_database: MakeDatabase,
    statement: str,
    parameters: dict[str, object],
    problem: str,
    code: str,
) -> None:
    db = make_database()
    try:
        async with db.read_only_unit_of_work() as uow:
            with pytest.raises(InvalidValueError) as raised:
                await uow.session.execute(text(statement), parameters)
        error = raised.value
        assert error.sqlstate == code
        assert problem in str(error)
        for value in map(str, parameters.values()):
            assert value not in str(error)
        assert error.__cause__ is not None
    finally:
        await db.dispose()


async def test_timeouts_and_lost_connections(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database(statement_timeout=0.5, lock_timeout=0.05)
    try:
        with pytest.raises(StatementTimeoutError) as cancelled:
            async with db.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(2)"))
        assert sqlstate(cancelled.value) == "57014"
        assert not is_connection_failure(cancelled.value)

        async with raw.transaction():
            await raw.execute("SELECT * FROM err_parents WHERE id = 1 FOR UPDATE")
            with pytest.raises(LockTimeoutError):
                async with db.unit_of_work() as uow:
                    await uow.session.execute(text("UPDATE err_parents SET n = 5 WHERE id = 1"))

        with pytest.raises(ConnectionLostError) as lost:
            async with db.unit_of_work() as uow:
                pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
                await raw.execute("SELECT pg_terminate_backend($1)", pid)
                await uow.session.execute(text("SELECT 1"))
        assert lost.value.database == "main"
        assert is_connection_failure(lost.value)
    finally:
        await db.dispose()


async def test_a_command_timeout_is_still_query_timeout_error(make_database: MakeDatabase) -> None:
    db = make_database(command_timeout=0.2)
    try:
        with pytest.raises(QueryTimeoutError, match="COMMAND_TIMEOUT"):
            async with db.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(3)"))
    finally:
        await db.dispose()


async def test_a_write_in_a_read_only_transaction_raises_read_only_error(
    make_database: MakeDatabase,
) -> None:
    db = make_database()
    try:
        async with db.read_only_unit_of_work(snapshot=True) as uow:
            # A write hidden in a function call gets past the client-side check, not the server.
            with pytest.raises(ReadOnlyError, match="read-only transaction") as raised:
                await uow.session.execute(
                    text("SELECT nextval(pg_get_serial_sequence('products', 'id'))")
                )
        assert sqlstate(raised.value) == "25006"
    finally:
        await db.dispose()


async def test_run_in_transaction_still_retries_a_serialization_failure(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database(retry_attempts=3, retry_base_delay=0.01, retry_max_delay=0.02)
    attempts = 0

    async def work(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        await uow.session.execute(text("SELECT n FROM err_parents WHERE id = 1"))
        if attempts == 1:  # another transaction changes the row this one read
            await raw.execute("UPDATE err_parents SET n = n + 1 WHERE id = 1")
        await uow.session.execute(text("UPDATE err_parents SET n = n + 10 WHERE id = 1"))

    try:
        await db.run_in_transaction(work, idempotent=True, isolation_level="SERIALIZABLE")
        assert attempts == 2
        assert await raw.fetchval("SELECT n FROM err_parents WHERE id = 1") == 11

        attempts = 0
        with pytest.raises(SerializationError):
            await db.run_in_transaction(work, idempotent=False, isolation_level="SERIALIZABLE")
        assert attempts == 1
    finally:
        await db.dispose()


async def test_the_outbox_still_catches_and_describes_translated_errors(
    make_database: MakeDatabase, raw: asyncpg.Connection
) -> None:
    db = make_database()
    try:
        with pytest.raises(DATABASE_ERRORS) as raised:
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("INSERT INTO err_parents VALUES (1, 'x', 0)"))
        assert isinstance(raised.value, UniqueViolationError)
        described = describe_database_error(raised.value)
        assert described.startswith("UniqueViolationError: database 'main': duplicate key")
    finally:
        await db.dispose()
