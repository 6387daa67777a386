"""``Databases``: the registry of named databases, warmed up and disposed together.

Nothing here is created at import time: the app's lifespan or the container builds it from the
settings and disposes it on shutdown.

Example:
    >>> databases = Databases.from_settings(load_settings())
    >>> async with databases:                      # warm up, and dispose at the end
    ...     async with databases.main.unit_of_work() as uow:
    ...         await uow.session.execute(text("SELECT 1"))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from asyncdal._translate import is_connection_failure
from asyncdal.errors import UnknownDatabaseError
from asyncdal.orm._budget import ExtraPool, check_budget, enforce_budget
from asyncdal.orm._database import Database
from asyncdal.settings import AsyncdalSettings

__all__ = ["Databases"]

logger = logging.getLogger("asyncdal.database")


async def _warm_up(database: Database) -> None:
    try:
        await database.warm_up()
    except Exception as error:
        if not database.settings.optional or not is_connection_failure(error):
            raise
        logger.warning(
            "optional database %r is unavailable at startup (%s); starting without it",
            database.name,
            type(error.__cause__ or error).__name__,
        )


class Databases(Mapping[str, Database]):
    """The registry of named databases; an async context manager that warms up and disposes.

    Example:
        >>> databases = Databases.from_settings(load_settings())
        >>> databases["main"] is databases.main
        True
    """

    def __init__(
        self,
        databases: Mapping[str, Database],
        *,
        workers: int = 1,
        extra_pools: Sequence[ExtraPool] = (),
    ) -> None:
        self._databases = dict(databases)
        self.workers = workers
        """Worker processes with pools like these (``WEB_CONCURRENCY``), for the budget."""
        self.extra_pools = tuple(extra_pools)
        """Pools of other processes on these servers (an outbox worker), for the budget."""

    @classmethod
    def from_settings(
        cls,
        settings: AsyncdalSettings,
        *,
        extra_pools: Sequence[ExtraPool] = (),
        **engine_options: Any,
    ) -> Self:
        """One :class:`Database` per configured name.

        Args:
            settings: the databases' settings.
            extra_pools: connections other processes hold on these servers, counted by the
                budget at warm-up (``asyncdal.outbox.outbox_pools`` gives the outbox's).
            **engine_options: extra ``create_async_engine`` arguments for every engine.
        """
        return cls(
            {
                name: Database(name, database_settings, **engine_options)
                for name, database_settings in settings.databases.items()
            },
            workers=settings.web_concurrency,
            extra_pools=extra_pools,
        )

    def __getitem__(self, name: str) -> Database:
        try:
            return self._databases[name.lower()]
        except KeyError:
            known = ", ".join(sorted(self._databases)) or "none"
            raise UnknownDatabaseError(
                f"no database named {name!r} is configured (configured: {known}); "
                f"set DB__{name.upper()}__URL"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._databases)

    def __len__(self) -> int:
        return len(self._databases)

    @property
    def main(self) -> Database:
        """The database named ``main``."""
        return self["main"]

    async def warm_up(self) -> None:
        """Check the connection budget (see :mod:`asyncdal.budget`), then warm up every
        database concurrently.

        An optional database (``DB__<NAME>__OPTIONAL``) that cannot be reached is logged and
        left cold, so the app still starts and serves what does not need it; a required one
        that cannot be reached raises.

        Raises:
            ConfigurationError: a server is over budget and ``STRICT_BUDGET`` is on for a
                database on it.
        """
        settings = {name: database.settings for name, database in self._databases.items()}
        enforce_budget(await check_budget(settings, self.workers, self.extra_pools))
        await asyncio.gather(*(_warm_up(database) for database in self._databases.values()))

    async def dispose(self) -> None:
        """Dispose every database; calling it again is harmless."""
        for database in self._databases.values():
            await database.dispose()

    async def __aenter__(self) -> Self:
        await self.warm_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        return f"Databases({list(self._databases.values())!r})"
