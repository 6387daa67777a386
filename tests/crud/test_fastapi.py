"""The FastAPI helpers through HTTP: the list dependency (typed OpenAPI, 422 for anything
else), 404 from get_one, and ETag / If-Match with 412 on a stale version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from httpx import AsyncClient
from sqlalchemy import text

from asyncdal import Database, ListQuery
from asyncdal.fastapi import list_query
from tests.blog import Author, AuthorRepository, PostRepository
from tests.crud.blogapp import create_app, databases
from tests.helpers import app_client


class Meddler:
    """Changes a post from another transaction in the middle of a request, when armed."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.title: str | None = None
        self.delete = False

    async def __call__(self, post_id: int) -> None:
        if self.title is None and not self.delete:
            return
        async with self.database.background_unit_of_work() as uow:
            posts = uow.repository(PostRepository)
            if self.delete:
                await posts.delete(post_id)
            else:
                await posts.update(post_id, title=self.title)
            await uow.commit()


@pytest.fixture
def meddler(blog_database: Database) -> Meddler:
    return Meddler(blog_database)


@pytest.fixture
async def client(blog_database: Database, meddler: Meddler) -> AsyncIterator[AsyncClient]:
    """A client on the blog app; the tables emptied afterwards."""
    try:
        async with app_client(
            create_app(databases(blog_database), meddler), base_url="http://blog"
        ) as http:
            yield http
    finally:
        async with blog_database.engine.begin() as connection:
            await connection.execute(text("TRUNCATE posts, authors RESTART IDENTITY CASCADE"))


@pytest.fixture
async def author_id(blog_database: Database, client: AsyncClient) -> int:
    async with blog_database.unit_of_work() as uow:
        author = await uow.repository(AuthorRepository).add(Author(email="a@x", name="Ada"))
        await uow.commit()
        return author.id


async def add_posts(client: AsyncClient, author_id: int) -> None:
    for title, slug, rating in [
        ("alpha", "a", "4.5"),
        ("beta", None, "2"),
        ("gamma", "g", None),
        ("delta", "d", "4.5"),
    ]:
        body = {"author_id": author_id, "title": title, "slug": slug, "rating": rating}
        response = await client.post("/posts", json=body)
        assert response.status_code == 201, response.text


def titles(body: dict[str, Any]) -> list[str]:
    return [item["title"] for item in body["items"]]


async def test_the_list_endpoint_filters_sorts_and_pages(
    client: AsyncClient, author_id: int
) -> None:
    await add_posts(client, author_id)
    response = await client.get("/posts", params={"rating__gte": "3", "sort": "-rating,title"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert titles(body) == ["alpha", "delta"]
    assert (body["total"], body["limit"], body["offset"], body["next_cursor"]) == (2, 10, 0, None)
    assert body["items"][0]["author"] == {"id": author_id, "name": "Ada"}
    assert body["items"][0]["rating"] == "4.5"

    seen: list[str] = []
    params: dict[str, Any] = {"sort": "-slug", "limit": 3}
    while True:
        page = (await client.get("/posts", params=params)).json()
        seen += titles(page)
        if page["next_cursor"] is None:
            break
        params = {"sort": "-slug", "limit": 3, "cursor": page["next_cursor"]}
    assert seen == ["beta", "gamma", "delta", "alpha"]

    filtered = await client.get(
        "/posts", params=[("slug__in", "a"), ("slug__in", "g"), ("title__icontains", "AL")]
    )
    assert titles(filtered.json()) == ["alpha"]
    assert titles((await client.get("/posts", params={"slug__isnull": "true"})).json()) == ["beta"]
    # The route's own parameter, and a list scoped by the path.
    assert titles((await client.get("/posts", params={"q": "MM"})).json()) == ["gamma"]
    scoped = await client.get(f"/authors/{author_id}/posts", params={"limit": 1})
    assert scoped.json()["total"] == 4
    other = await client.get(f"/authors/{author_id + 1}/posts")
    assert other.json() == {"items": [], "total": 0, "limit": 10, "offset": 0, "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"colour": "red"}, "colour"),
        ({"version": "1"}, "version"),
        ({"rating__like": "4"}, "rating__like"),
        ({"rating__lt": "abc"}, "rating__lt"),
        ({"rating__lt": "123456"}, "rating__lt"),
        ({"author_id": str(2**63)}, "author_id"),
        ({"published_on__gt": "yesterday"}, "published_on__gt"),
        ({"slug__isnull": "maybe"}, "slug__isnull"),
        ({"sort": "version"}, "sort"),
        ({"sort": "title,-title"}, "sort"),
        ({"limit": "51"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "x" * 3000}, "cursor"),
        ({"title__contains": "a\x00b"}, "title__contains"),
        ([("limit", "1"), ("limit", "2")], "limit"),
    ],
)
async def test_anything_else_is_a_422_naming_the_parameter(
    client: AsyncClient, params: Any, where: str
) -> None:
    response = await client.get("/posts", params=params)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert ["query", where] in locations, response.text


async def test_a_cursor_with_an_offset_or_other_filters_is_refused(
    client: AsyncClient, author_id: int
) -> None:
    await add_posts(client, author_id)
    cursor = (await client.get("/posts", params={"limit": 1})).json()["next_cursor"]
    both = await client.get("/posts", params={"cursor": cursor, "offset": 1})
    assert both.status_code == 422
    assert "offset or cursor" in both.text
    refiltered = await client.get("/posts", params={"cursor": cursor, "slug": "a"})
    assert refiltered.status_code == 422
    assert "other filters" in refiltered.text


async def test_openapi_shows_each_filter_with_its_type(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    parameters = {p["name"]: p for p in schema["paths"]["/posts"]["get"]["parameters"]}

    def types(name: str) -> set[str]:
        found = parameters[name]["schema"]
        return {option.get("type") for option in found.get("anyOf", [found])} - {"null"}

    assert types("author_id") == {"integer"}
    assert types("author_id__in") == {"array"}
    assert types("title__icontains") == {"string"}
    assert types("slug__isnull") == {"boolean"}
    assert "number" in types("rating__lt")
    assert parameters["published_on__gt"]["schema"]["anyOf"][0]["format"] == "date"
    assert parameters["limit"]["schema"]["anyOf"][0]["maximum"] == 50
    assert "published_on" in parameters["sort"]["description"]
    assert "is less than" in parameters["rating__lt"]["description"]
    assert "q" in parameters  # the route's own
    assert not any(name.startswith("version") for name in parameters)
    assert "title__isnull" not in parameters  # NOT NULL: no isnull offered
    assert "rating__contains" not in parameters  # not text
    page = schema["components"]["schemas"]["Page_PostRead_"]
    assert set(page["properties"]) == {"items", "total", "limit", "offset", "next_cursor"}


async def test_get_one_is_a_404(client: AsyncClient) -> None:
    response = await client.get("/posts/12345")
    assert response.status_code == 404
    assert response.json() == {"detail": "Post 12345 not found"}


async def test_etag_and_if_match(client: AsyncClient, author_id: int, meddler: Meddler) -> None:
    await add_posts(client, author_id)
    read = await client.get("/posts/1")
    assert read.headers["ETag"] == '"1"'
    missing = await client.patch("/posts/1", json={"title": "x"})
    assert missing.status_code == 428
    edited = await client.patch("/posts/1", json={"rating": "5"}, headers={"If-Match": '"1"'})
    assert edited.status_code == 200, edited.text
    assert (edited.headers["ETag"], edited.json()["version"]) == ('"2"', 2)
    assert Decimal(edited.json()["rating"]) == 5
    for stale in ['"1"', 'W/"2"', '"7", "1"']:
        late = await client.patch("/posts/1", json={"title": "late"}, headers={"If-Match": stale})
        assert late.status_code == 412, late.text
        assert "version" in late.json()["detail"]
    listed = await client.patch("/posts/1", json={"title": "y"}, headers={"If-Match": '"1", "2"'})
    assert listed.headers["ETag"] == '"3"'
    anything = await client.patch("/posts/1", json={"title": "z"}, headers={"If-Match": "*"})
    assert anything.status_code == 200
    assert (await client.get("/posts/1")).json()["title"] == "z"
    gone = await client.delete("/posts/2", headers={"If-Match": '"9"'})
    assert gone.status_code == 412
    assert (await client.delete("/posts/2", headers={"If-Match": '"1"'})).status_code == 204


async def test_a_write_racing_another_is_a_412(
    client: AsyncClient, author_id: int, meddler: Meddler
) -> None:
    await add_posts(client, author_id)
    meddler.title = "theirs"
    raced = await client.patch("/posts/1", json={"title": "mine"}, headers={"If-Match": '"1"'})
    assert raced.status_code == 412, raced.text
    in_place = await client.put("/posts/2/title", params={"title": "mine"})
    assert in_place.status_code == 412, in_place.text  # found by the commit before the response
    meddler.title = None
    assert (await client.get("/posts/1")).json()["title"] == "theirs"
    assert (await client.get("/posts/2")).json()["title"] == "theirs"


NarrowQuery = Annotated[
    ListQuery,
    Depends(list_query(PostRepository, operators={"title": ["icontains"], "rating": ["gte"]})),
]


def test_operators_narrow_the_filters_offered() -> None:
    app = FastAPI()

    @app.get("/posts")
    async def posts(query: NarrowQuery) -> dict[str, Any]:
        return dict(query.filters)

    parameters = app.openapi()["paths"]["/posts"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == [
        "sort",
        "limit",
        "offset",
        "cursor",
        "rating__gte",
        "title__icontains",
    ]


@pytest.mark.parametrize(
    ("operators", "message"),
    [
        ({"version": ["eq"]}, "not filterable"),
        ({"rating": ["contains"]}, "does not apply"),
        ({"title": ["like"]}, "does not apply"),
    ],
)
def test_operators_are_checked_when_the_dependency_is_made(
    operators: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        list_query(PostRepository, operators=operators)
