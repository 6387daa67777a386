"""Tag each connection's ``application_name`` with the request id it runs for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal._request_id import current_request_id
from asyncdal.engine._driver import statement_hooks

__all__ = ["tag_connections_with_request_id"]

# PostgreSQL keeps the first NAMEDATALEN - 1 bytes of application_name.
_APPLICATION_NAME_BYTES = 63
_TAGGED = "asyncdal_request_id"
_SET_APPLICATION_NAME = "SELECT set_config('application_name', $1, false)"


def _application_name(base: str, request_id: str) -> str:
    # PostgreSQL keeps 63 bytes: shorten the base name rather than the request id, which is
    # what a reader of pg_stat_activity looks for (a 55-character traceparent fits whole).
    room = _APPLICATION_NAME_BYTES - len(request_id.encode()) - 1
    if room <= 0:
        return request_id.encode()[:_APPLICATION_NAME_BYTES].decode(errors="ignore")
    return f"{base.encode()[:room].decode(errors='ignore')}:{request_id}"


def tag_connections_with_request_id(engine: AsyncEngine, application_name: str) -> None:
    """Before a connection's first statement under a request id, set its ``application_name``
    to ``<application_name>:<request id>``; without one, put back the plain name.

    It costs one round trip per request and connection (nothing while the id is unchanged), so
    it is off unless ``DB__<NAME>__TAG_REQUESTS=true``; ``bench`` measures it. It runs before
    the statement rather than at checkout, so checkouts that run nothing pay nothing and the
    pool's own checks (pre-ping, the breaker's probe) come first.
    """

    def before_statement(conn: Any, cursor: Any, *args: Any) -> None:
        info = conn.info
        request_id = current_request_id()
        if info.get(_TAGGED) == request_id:
            return
        name = (
            application_name
            if request_id is None
            else _application_name(application_name, request_id)
        )
        tagger = conn.connection.dbapi_connection.cursor()
        try:
            # One fixed statement text with a parameter: the driver prepares it once per
            # connection. A `SET application_name = '<id>'` text would differ per request and
            # push the app's own statements out of the prepared-statement cache. A failure
            # here is a failure of this statement's connection, handled as one.
            tagger.execute(_SET_APPLICATION_NAME, (name,))
        finally:
            tagger.close()
        info[_TAGGED] = request_id

    event.listen(engine.sync_engine, "before_cursor_execute", before_statement)
    hooks = statement_hooks(engine)
    if hooks is None:
        return

    async def before_driver_read(driver: Any, info: dict[Any, Any]) -> None:
        # The same as before_statement, for a read on the driver (the same info: the pooled
        # connection's).
        request_id = current_request_id()
        if info.get(_TAGGED) == request_id:
            return
        name = (
            application_name
            if request_id is None
            else _application_name(application_name, request_id)
        )
        await driver.fetchval(_SET_APPLICATION_NAME, name)
        info[_TAGGED] = request_id

    hooks.before.append(before_driver_read)
    hooks.stands_in_for("before_cursor_execute", before_statement)
