"""The OpenAPI document of an app set up with asyncdal describes asyncdal's answers, and each
answer asyncdal gives matches what the document says of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal import (
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConstraintViolationError,
    Database,
    Databases,
    DatabaseUnavailableError,
    ForeignKeyViolationError,
    InvalidQueryError,
    InvalidValueError,
    NotFoundError,
    QueryTimeoutError,
    ReadOnlyError,
    StaleVersionError,
    StatementTimeoutError,
    UniqueViolationError,
)
from asyncdal.fastapi import (
    CommitFailed,
    ConstraintViolation,
    ErrorDetail,
    InternalError,
    InvalidRequest,
    ServiceUnavailable,
    databases_lifespan,
    error_responses,
    read_only_unit_of_work_provider,
    session_provider,
    setup,
)
from tests.conftest import plain
from tests.helpers import assert_documented

# At module level: FastAPI resolves the (string) annotations in the module's namespace.
Session = Annotated[AsyncSession, Depends(session_provider())]
Reading = Depends(read_only_unit_of_work_provider())

REF = "#/components/schemas/{}"


class Item(BaseModel):
    count: int


def build_app(databases: Callable[[], Databases] | None = None) -> FastAPI:
    """Routes with a read-write provider, a read-only one, none, and one that states a 409."""
    app = FastAPI(lifespan=databases_lifespan(databases or (lambda: Databases({})), warm_up=False))
    setup(app)

    @app.get("/plain")
    async def plain_route() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/read", dependencies=[Reading])
    async def read(fail: str | None = None) -> dict[str, str]:
        failures: dict[str, Exception] = {
            "unavailable": DatabaseUnavailableError(
                "database 'main' is unavailable", database="main", retry_after=3.2
            ),
            "statement": StatementTimeoutError("too slow", database="main"),
            "query": QueryTimeoutError("too slow", database="main"),
            "unknown": CommitOutcomeUnknownError("COMMIT was cut off", database="main"),
            "sort": InvalidQueryError("cannot sort by 'colour'", parameter="sort"),
            "filter": InvalidQueryError("unknown filter operator 'like'"),
            "bug": RuntimeError("a bug"),
        }
        if fail is not None:
            raise failures[fail]
        return {"status": "ok"}

    @app.post(
        "/write/{key}",
        responses=error_responses(UniqueViolationError, InvalidValueError),
        status_code=201,
    )
    async def write(key: int, session: Session, tag: str = "x") -> dict[str, int]:
        if tag == "taken":
            raise UniqueViolationError(
                "duplicate key", database="main", sqlstate="23505", constraint="items_key_key"
            )
        if tag == "out_of_range":
            raise InvalidValueError("out of range", database="main", sqlstate="22003")
        await session.execute(
            text("INSERT INTO oa_items (id, tag) VALUES (:id, :tag)"), {"id": key, "tag": tag}
        )
        return {"id": key}

    @app.post("/body")
    async def body(item: Item) -> Item:
        return item

    return app


def operation(document: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]
    return found


def body_schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    response = operation(document, path, method)["responses"][str(status)]
    return response["content"]["application/json"]["schema"]


def test_every_operation_documents_the_lsn_header_its_400_and_the_500() -> None:
    document = build_app().openapi()
    for path, method in (("/plain", "get"), ("/read", "get"), ("/write/{key}", "post")):
        found = operation(document, path, method)
        (header,) = [p for p in found["parameters"] if p["name"] == "X-DB-LSN"]
        assert header["in"] == "header"
        assert not header["required"]
        assert header["schema"]["pattern"] == "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
        assert body_schema(document, path, method, 400) == {"$ref": REF.format("ErrorDetail")}
        answer = found["responses"]["500"]
        assert answer["headers"]["X-Request-ID"]["required"]


def test_routes_with_a_provider_document_503_and_504_and_only_they() -> None:
    document = build_app().openapi()
    assert {"503", "504"}.isdisjoint(operation(document, "/plain", "get")["responses"])
    for path, method in (("/read", "get"), ("/write/{key}", "post")):
        responses = operation(document, path, method)["responses"]
        assert body_schema(document, path, method, 503) == {
            "$ref": REF.format("ServiceUnavailable")
        }
        assert responses["503"]["headers"]["Retry-After"]["required"]
        assert body_schema(document, path, method, 504) == {"$ref": REF.format("ErrorDetail")}


def test_a_read_write_route_documents_the_500_of_a_failed_commit_too() -> None:
    document = build_app().openapi()
    assert body_schema(document, "/read", "get", 500) == {"$ref": REF.format("InternalError")}
    assert body_schema(document, "/write/{key}", "post", 500) == {
        "anyOf": [{"$ref": REF.format("InternalError")}, {"$ref": REF.format("CommitFailed")}]
    }


def test_a_status_the_route_documents_is_left_as_it_says() -> None:
    app = build_app()

    @app.get(
        "/own", responses={503: {"model": Item, "description": "mine"}}, dependencies=[Reading]
    )
    async def own() -> None:
        return None

    responses = operation(app.openapi(), "/own", "get")["responses"]
    assert responses["503"]["description"] == "mine"


def test_routes_added_after_the_document_was_built_are_documented_too() -> None:
    app = build_app()
    app.openapi()

    @app.get("/later", dependencies=[Reading])
    async def later() -> None:
        return None

    assert "503" in operation(app.openapi(), "/later", "get")["responses"]


def test_an_app_model_named_like_an_asyncdal_one_is_refused() -> None:
    app = FastAPI()
    setup(app)

    class ErrorDetail(BaseModel):  # the app's own, not asyncdal's
        code: int

    @app.get("/clash", responses={418: {"model": ErrorDetail}})
    async def clash() -> None:
        return None

    with pytest.raises(ConfigurationError, match="ErrorDetail"):
        app.openapi()


def test_error_responses_names_each_errors_status_and_body() -> None:
    assert error_responses(UniqueViolationError) == {
        409: {"description": error_responses(409)[409]["description"], "model": ConstraintViolation}
    }
    statuses = error_responses(ConstraintViolationError)
    # The base class stands for its subclasses: a duplicate key is a 409, a check a 422, and a
    # 422 entry keeps FastAPI's validation errors, which it would otherwise leave out.
    assert statuses[409]["model"] is ConstraintViolation
    assert statuses[422]["model"] == InvalidRequest | ConstraintViolation
    assert error_responses(ForeignKeyViolationError, DatabaseUnavailableError).keys() == {409, 503}
    assert error_responses(503)[503]["headers"]["Retry-After"]["required"]
    assert error_responses(500)[500]["model"] == InternalError | CommitFailed
    assert error_responses(StatementTimeoutError)[504]["model"] is ErrorDetail
    assert error_responses(InvalidQueryError)[422]["model"] is InvalidRequest


def test_error_responses_documents_the_crud_helpers_answers() -> None:
    """get_one's 404, a stale version's 412 and check_if_match(required=True)'s 428."""
    documented = error_responses(NotFoundError, StaleVersionError, 428)
    assert documented.keys() == {404, 412, 428}
    assert all(entry["model"] is ErrorDetail for entry in documented.values())
    assert "If-Match" in documented[428]["description"]


@pytest.mark.parametrize("refused", [ReadOnlyError, 418])
def test_error_responses_refuses_what_asyncdal_does_not_answer(refused: Any) -> None:
    with pytest.raises(ValueError, match="asyncdal"):
        error_responses(refused)


@pytest.fixture
async def items(test_database_url: URL) -> AsyncIterator[None]:
    """A table whose deferred trigger refuses a row at COMMIT (a failure with no name)."""
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    await connection.execute(
        """
        CREATE TABLE oa_items (id int PRIMARY KEY, tag text NOT NULL);
        CREATE FUNCTION oa_refuse() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
        CREATE CONSTRAINT TRIGGER oa_refused AFTER INSERT ON oa_items
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.tag = 'refuse')
            EXECUTE FUNCTION oa_refuse();
        """
    )
    try:
        yield
    finally:
        await connection.execute("DROP TABLE oa_items; DROP FUNCTION oa_refuse;")
        await connection.close()


@pytest.fixture
async def client(items: None, make_database: Callable[..., Database]) -> AsyncIterator[AsyncClient]:
    """A client on :func:`build_app` that gets the 500s as a client would (not the error)."""
    database = make_database()
    app = build_app(lambda: Databases({"main": database}))
    async with LifespanManager(app) as manager:
        transport = ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def test_the_answers_match_the_document(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    answers = {
        "unavailable": 503,
        "statement": 504,
        "query": 504,
        "unknown": 503,
        "sort": 422,
        "filter": 422,
        "bug": 500,
    }
    for fail, status in answers.items():
        answer = await client.get("/read", params={"fail": fail})
        assert answer.status_code == status, (fail, answer.text)
        assert_documented(document, "/read", "get", answer)
    assert (await client.get("/read", params={"fail": "unavailable"})).headers["Retry-After"] == "4"
    for key, tag, status in (
        ("1", "x", 201),
        ("1", "taken", 409),
        ("1", "out_of_range", 422),
        ("one", "x", 422),
        ("2", "refuse", 500),
    ):
        answer = await client.post(f"/write/{key}", params={"tag": tag})
        assert answer.status_code == status, (tag, answer.text)
        assert_documented(document, "/write/{key}", "post", answer)
    bad_header = await client.get("/plain", headers={"X-DB-LSN": "0/1\x1c"})
    assert bad_header.status_code == 400
    assert_documented(document, "/plain", "get", bad_header)


async def test_an_invalid_query_is_a_422_in_fastapis_shape_naming_the_parameter(
    client: AsyncClient,
) -> None:
    named = await client.get("/read", params={"fail": "sort"})
    assert named.json() == {
        "detail": [
            {"type": "invalid_query", "loc": ["query", "sort"], "msg": "cannot sort by 'colour'"}
        ]
    }
    unnamed = await client.get("/read", params={"fail": "filter"})
    assert unnamed.json()["detail"][0]["loc"] == ["query"]


async def test_a_lone_surrogate_in_a_body_is_a_422_not_a_500(client: AsyncClient) -> None:
    # JSON allows "\ud800"; Python decodes it, UTF-8 cannot encode it, and FastAPI's 422 echoes
    # the input: written as UTF-8, the answer itself failed.
    answer = await client.post(
        "/body", content=b'{"count": "\\ud800"}', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "count"]
    assert answer.json()["detail"][0]["input"] == "\ud800"


@pytest.mark.parametrize("value", ["0/1\x1c", "0/1\n", "\xa00/1", "0 /1", "1", ""])
async def test_an_lsn_header_is_taken_only_as_the_document_says(
    client: AsyncClient, value: str
) -> None:
    # Python's \s would take these separators; the document's pattern does not.
    answer = await client.get("/plain", headers={"X-DB-LSN": value.encode("latin-1")})
    assert answer.status_code == 400, value


@pytest.mark.parametrize("value", ["0/1", " 0/1\t", "FFFFFFFF/ffffffff"])
async def test_an_lsn_header_with_http_whitespace_around_it_is_taken(
    client: AsyncClient, value: str
) -> None:
    assert (await client.get("/plain", headers={"X-DB-LSN": value})).status_code == 200


def test_the_models_are_the_bodies_in_the_document() -> None:
    document = build_app().openapi()
    schemas = document["components"]["schemas"]
    for model in (ErrorDetail, ServiceUnavailable, InternalError, CommitFailed):
        assert schemas[model.__name__]["additionalProperties"] is False
    # The outcome is left out when there is none, never null.
    assert ServiceUnavailable(detail="x").model_dump(exclude_none=True) == {"detail": "x"}
    assert "null" not in str(schemas["ServiceUnavailable"]["properties"]["outcome"])
