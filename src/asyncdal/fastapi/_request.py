"""The one middleware ``setup(app)`` installs: request id, ``X-DB-LSN`` and commit-before-response.

:class:`RequestMiddleware` does in one pure ASGI layer what :class:`RequestIdMiddleware`,
:class:`~asyncdal.fastapi.ReadYourWritesMiddleware` and
:class:`~asyncdal.fastapi.TransactionMiddleware` do when stacked (those stay, for apps that
install them one by one): each layer of a stack costs a call, a ``send`` closure and a copy of
the response's start message per request; three layers cost a raw endpoint about a quarter of
its throughput (``make bench``, app (s)).

Per request it does only what is on:

- the request id: always (read from ``X-Request-ID`` or made, set for the request, echoed);
- read-your-writes: an ``X-DB-LSN`` sent is always checked and honoured, but commit positions
  are collected only when the database has replicas (without replicas no commit has one);
- settling units of work: only when a provider registered one;
- the safety nets' request scope (route template and request id for leak and idle-hold
  warnings, statements counted for ``MAX_QUERIES_PER_REQUEST``) and the ``REQUEST_TIMEOUT``
  deadline: only when some database of the app switches one of them on
  (:mod:`asyncdal.fastapi._safety`).

What the app's databases ask for is worked out once per ``Databases`` object (the lifespan's),
not per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from random import getrandbits

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asyncdal._request_id import REQUEST_ID, REQUEST_ID_HEADER, accepted_request_id
from asyncdal.fastapi._consistency import LSN_HEADER, bad_lsn_header, wire_lsn
from asyncdal.fastapi._middleware import serve_settling, with_header
from asyncdal.fastapi._safety import SafetyPlan, safety_plan
from asyncdal.observe._request_id import SCOPE_KEY as REQUEST_ID_KEY
from asyncdal.orm._databases import Databases
from asyncdal.replicas._lsn import current_commit_lsns, format_lsn, read_your_writes

__all__ = ["RequestMiddleware"]

_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
_LSN_KEY = LSN_HEADER.lower().encode("latin-1")
_DATABASES_STATE_KEY = "databases"


class RequestMiddleware:
    """Request id, ``X-DB-LSN`` and commit-before-response in one pure ASGI middleware.

    Installed by :func:`~asyncdal.fastapi.setup`; it behaves as the three middlewares it
    replaces stacked in that order (request id outermost, then read-your-writes, then the
    transaction), headers and error answers included.

    Args:
        app: the ASGI app.
        database: the named database whose WAL positions ``X-DB-LSN`` carries.
    """

    def __init__(self, app: ASGIApp, database: str = "main") -> None:
        self.app = app
        self.database = database
        self._planned: tuple[object, _Plan] | None = None

    def _plan(self, scope: Scope) -> _Plan:
        """What the app's databases (from the lifespan state) ask of each request, worked
        out once per ``Databases`` object."""
        state = scope.get("state")
        databases = state.get(_DATABASES_STATE_KEY) if state is not None else None
        planned = self._planned
        if planned is not None and planned[0] is databases:
            return planned[1]
        plan = _Plan(databases, self.database)
        # The object itself, not its id(): a later lifespan's may get a freed one's id.
        self._planned = (databases, plan)
        return plan

    def _has_replicas(self, scope: Scope) -> bool:
        """Whether the app's database has replicas: only then can a commit have a position
        to answer with."""
        return self._plan(scope).replicas

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: it returns the one that serves the request, so that no
        # coroutine of its own sits between the server and the endpoint (each is resumed
        # whenever the request waits).
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        sent_id: bytes | None = None
        sent_lsn: bytes | None = None
        for key, value in scope["headers"]:
            if key == _ID_KEY:
                if sent_id is None:
                    sent_id = value
            elif key == _LSN_KEY and sent_lsn is None:
                sent_lsn = value
        # A new id the cheap way: an id needs to be unique, not secret, and the random
        # module's generator gives 128 bits without the system call uuid4() and os.urandom
        # make per id; it is reseeded in a forked worker. Its bytes' hex() is 32 digits as
        # a format string gives them, in a third of the time (timeit: 82 vs 244 ns).
        # One sent by a client is vetted. serve_settling sets it for the request.
        request_id = (
            getrandbits(128).to_bytes(16, "big").hex()
            if sent_id is None
            else accepted_request_id(sent_id.decode("latin-1"))
        )
        scope[REQUEST_ID_KEY] = request_id
        # Vetted or made here, the id is ASCII: UTF-8, the codec str.encode finds fastest.
        id_header = (_ID_KEY, request_id.encode())
        # _plan(), inlined for the one Databases object a process serves with.
        state = scope.get("state")
        planned = self._planned
        if (
            planned is not None
            and state is not None
            and planned[0] is state.get(_DATABASES_STATE_KEY)
        ):
            plan = planned[1]
        else:
            plan = self._plan(scope)
        if sent_lsn is None and not plan.replicas:
            # Read-your-writes is off for this request: nothing to honour, and without
            # replicas no commit has a position to answer with.
            return serve_settling(
                self.app, scope, receive, send, id_header, None, request_id, plan.safety
            )
        return self._with_positions(scope, receive, send, id_header, request_id, sent_lsn, plan)

    async def _with_positions(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        id_header: tuple[bytes, bytes],
        request_id: str,
        sent_lsn: bytes | None,
        plan: _Plan,
    ) -> None:
        """The request with read-your-writes: the ``X-DB-LSN`` sent honoured, the commit's
        position answered."""
        token = REQUEST_ID.set(request_id)
        try:
            required: int | None = None
            if sent_lsn is not None:
                text = sent_lsn.decode("latin-1")
                required = wire_lsn(text)
                if required is None:
                    await bad_lsn_header(send, text, [id_header])
                    return
            with current_commit_lsns() as committed, read_your_writes(required, self.database):
                await self._settling(
                    scope, receive, send, id_header, None, committed, required, plan
                )
        finally:
            REQUEST_ID.reset(token)

    def _settling(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        id_header: tuple[bytes, bytes],
        request_id: str | None,
        committed: dict[str, int] | None,
        required: int | None,
        plan: _Plan,
    ) -> Awaitable[None]:
        """The request, served by :func:`serve_settling`, with ``X-DB-LSN`` answered when a
        commit (or the client) gave a position, and within the safety nets when planned."""
        on_start: Callable[[Message], Message] | None = None
        if committed is not None:
            database = self.database

            def with_position(message: Message) -> Message:
                # Read when the answer starts: the commit has just filled ``committed``.
                position = max(committed.get(database, 0), required or 0)
                if not position:
                    return message  # the app's own X-DB-LSN, if any, stands
                return with_header(message, (_LSN_KEY, format_lsn(position).encode()))

            on_start = with_position
        return serve_settling(
            self.app, scope, receive, send, id_header, on_start, request_id, plan.safety
        )


class _Plan:
    """What an app's databases ask of each request.

    Args:
        databases: the lifespan's databases (any mapping of names to databases), or None.
        database: the name whose replicas ``X-DB-LSN`` follows.
    """

    __slots__ = ("replicas", "safety")

    def __init__(self, databases: object, database: str) -> None:
        self.replicas = False
        """The database has replicas (only then can a commit have a position)."""
        self.safety: SafetyPlan | None = None
        """The safety nets' per-request work, None when every database has them off."""
        if databases is None:
            return
        try:
            found = databases[database]  # type: ignore[index]
        except (KeyError, LookupError, TypeError):
            found = None
        settings = getattr(found, "settings", None)
        self.replicas = bool(getattr(settings, "replicas", None))
        if isinstance(databases, Databases):
            self.safety = safety_plan(each.settings for each in databases.values())
