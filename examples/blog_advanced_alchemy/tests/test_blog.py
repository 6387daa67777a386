"""The blog's HTTP contract, on a real PostgreSQL."""

from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from blog_advanced_alchemy.models import Event


async def new_author(client: AsyncClient, email: str = "ada@example.org") -> int:
    answer = await client.post("/authors", json={"name": "Ada", "email": email})
    assert answer.status_code == 201
    return int(answer.json()["id"])


async def new_post(client: AsyncClient, author_id: int, title: str = "Hello") -> int:
    answer = await client.post("/posts", json={"author_id": author_id, "title": title, "body": "…"})
    assert answer.status_code == 201
    return int(answer.json()["id"])


async def test_an_author_is_read_with_their_posts(client: AsyncClient) -> None:
    author_id = await new_author(client)
    first, second = [await new_post(client, author_id, title) for title in "ab"]
    author = (await client.get(f"/authors/{author_id}")).json()
    assert author["email"] == "ada@example.org"
    assert [post["id"] for post in author["posts"]] == [first, second]


async def test_a_taken_email_or_an_unknown_author_is_a_409(client: AsyncClient) -> None:
    author_id = await new_author(client)
    again = await client.post("/authors", json={"name": "Bo", "email": "ada@example.org"})
    assert again.status_code == 409
    orphan = {"author_id": author_id + 1, "title": "t", "body": "b"}
    assert (await client.post("/posts", json=orphan)).status_code == 409


async def test_what_does_not_exist_is_a_404(client: AsyncClient) -> None:
    assert (await client.get("/authors/1")).status_code == 404
    assert (await client.get("/posts/1")).status_code == 404
    assert (await client.post("/posts/1/publish")).status_code == 404
    assert (await client.delete("/posts/1")).status_code == 404


async def test_posts_are_filtered_sorted_and_paged(client: AsyncClient) -> None:
    ada, bo = await new_author(client), await new_author(client, "bo@x.org")
    for title in ["SQL tips", "Async sql", "Gardening", "More SQL"]:
        await new_post(client, ada, title)
    await new_post(client, bo, "SQL by Bo")
    query = {"author_id": str(ada), "title__icontains": "sql", "sort": "-title", "limit": "2"}
    page = (await client.get("/posts", params=query)).json()
    assert [post["title"] for post in page["items"]] == ["SQL tips", "More SQL"]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    following = (await client.get("/posts", params={**query, "offset": "2"})).json()
    assert [post["title"] for post in following["items"]] == ["Async sql"]


async def test_an_unknown_sort_field_or_a_page_too_large_is_a_422(
    client: AsyncClient,
) -> None:
    assert (await client.get("/posts", params={"sort": "body"})).status_code == 422
    assert (await client.get("/posts", params={"limit": 1000})).status_code == 422


async def test_a_change_needs_the_current_etag(client: AsyncClient) -> None:
    post_id = await new_post(client, await new_author(client))
    etag = (await client.get(f"/posts/{post_id}")).headers["ETag"]
    change = {"title": "Hello again"}
    assert (await client.patch(f"/posts/{post_id}", json=change)).status_code == 428
    changed = await client.patch(f"/posts/{post_id}", json=change, headers={"If-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["title"] == "Hello again"
    assert changed.headers["ETag"] != etag
    stale = await client.patch(f"/posts/{post_id}", json=change, headers={"If-Match": etag})
    assert stale.status_code == 412


async def test_publishing_records_an_event(client: AsyncClient, engine: AsyncEngine) -> None:
    post_id = await new_post(client, await new_author(client))
    published = await client.post(f"/posts/{post_id}/publish")
    assert published.json()["published"] is True
    filtered = await client.get("/posts", params={"published": True})
    assert [post["id"] for post in filtered.json()["items"]] == [post_id]
    async with AsyncSession(engine) as session:
        events = (await session.execute(select(Event.type, Event.payload))).all()
    assert events == [("post.published", {"id": post_id, "title": "Hello"})]


async def test_a_deleted_post_is_gone(client: AsyncClient) -> None:
    post_id = await new_post(client, await new_author(client))
    assert (await client.delete(f"/posts/{post_id}")).status_code == 204
    assert (await client.get(f"/posts/{post_id}")).status_code == 404
