"""A streamed answer may read through the request's session while it streams.

FastAPI runs a yield dependency's teardown after the response is sent from 0.118 on (before
that, right before the response started, so a ``StreamingResponse`` found its session closed):
asyncdal's ``fastapi`` extra requires that release, and this shows why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal import Database, Databases
from asyncdal.fastapi import databases_lifespan, session_provider, setup
from tests.helpers import app_client

# At module level: FastAPI resolves the (string) annotation in the module's namespace.
ReadSession = Annotated[AsyncSession, Depends(session_provider())]


async def test_a_streaming_response_reads_through_the_requests_session(
    make_database: Callable[..., Database],
) -> None:
    db = make_database()
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": db}), warm_up=False))
    setup(app)

    @app.get("/numbers")
    async def numbers(session: ReadSession) -> StreamingResponse:
        async def lines() -> AsyncIterator[str]:
            for n in range(3):  # each chunk is read after the response has started
                yield f"{await session.scalar(text('SELECT :n * 10'), {'n': n})}\n"

        return StreamingResponse(lines(), media_type="text/plain")

    async with app_client(app) as client:
        response = await client.get("/numbers")
    assert response.status_code == 200, response.text
    assert response.text == "0\n10\n20\n"
