"""The blog's HTTP contract, on a real PostgreSQL."""

from httpx import AsyncClient
from sqlalchemy import select

from asyncdal import Database
from blog_asyncdal.models import outbox


async def new_author(client: AsyncClient, email: str = "ada@example.org") -> int:
    answer = await client.post("/authors", json={"name": "Ada", "email": email})
    assert answer.status_code == 201
    return int(answer.json()["id"])


async def new_post(client: AsyncClient, author_id: int, title: str = "Hello") -> int:
    answer = await client.post("/posts", json={"author_id": author_id, "title": title, "body": "…"})
    assert answer.status_code == 201
    return int(answer.json()["id"])


async def test_an_author_is_read_with_their_posts(asyncdal_client: AsyncClient) -> None:
    author_id = await new_author(asyncdal_client)
    first, second = [await new_post(asyncdal_client, author_id, title) for title in "ab"]
    author = (await asyncdal_client.get(f"/authors/{author_id}")).json()
    assert author["email"] == "ada@example.org"
    assert [post["id"] for post in author["posts"]] == [first, second]


async def test_a_taken_email_or_an_unknown_author_is_a_409(asyncdal_client: AsyncClient) -> None:
    author_id = await new_author(asyncdal_client)
    again = await asyncdal_client.post("/authors", json={"name": "Bo", "email": "ada@example.org"})
    assert again.status_code == 409
    orphan = {"author_id": author_id + 1, "title": "t", "body": "b"}
    assert (await asyncdal_client.post("/posts", json=orphan)).status_code == 409


async def test_what_does_not_exist_is_a_404(asyncdal_client: AsyncClient) -> None:
    assert (await asyncdal_client.get("/authors/1")).status_code == 404
    assert (await asyncdal_client.get("/posts/1")).status_code == 404
    assert (await asyncdal_client.post("/posts/1/publish")).status_code == 404
    assert (await asyncdal_client.delete("/posts/1")).status_code == 404


async def test_posts_are_filtered_sorted_and_paged(asyncdal_client: AsyncClient) -> None:
    ada, bo = await new_author(asyncdal_client), await new_author(asyncdal_client, "bo@x.org")
    for title in ["SQL tips", "Async sql", "Gardening", "More SQL"]:
        await new_post(asyncdal_client, ada, title)
    await new_post(asyncdal_client, bo, "SQL by Bo")
    query = {"author_id": str(ada), "title__icontains": "sql", "sort": "-title", "limit": "2"}
    page = (await asyncdal_client.get("/posts", params=query)).json()
    assert [post["title"] for post in page["items"]] == ["SQL tips", "More SQL"]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    following = (await asyncdal_client.get("/posts", params={**query, "offset": "2"})).json()
    assert [post["title"] for post in following["items"]] == ["Async sql"]


async def test_an_unknown_sort_field_or_a_page_too_large_is_a_422(
    asyncdal_client: AsyncClient,
) -> None:
    assert (await asyncdal_client.get("/posts", params={"sort": "body"})).status_code == 422
    assert (await asyncdal_client.get("/posts", params={"limit": 1000})).status_code == 422


async def test_a_change_needs_the_current_etag(asyncdal_client: AsyncClient) -> None:
    post_id = await new_post(asyncdal_client, await new_author(asyncdal_client))
    etag = (await asyncdal_client.get(f"/posts/{post_id}")).headers["ETag"]
    change = {"title": "Hello again"}
    assert (await asyncdal_client.patch(f"/posts/{post_id}", json=change)).status_code == 428
    changed = await asyncdal_client.patch(
        f"/posts/{post_id}", json=change, headers={"If-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.json()["title"] == "Hello again"
    assert changed.headers["ETag"] != etag
    stale = await asyncdal_client.patch(
        f"/posts/{post_id}", json=change, headers={"If-Match": etag}
    )
    assert stale.status_code == 412


async def test_publishing_records_an_event(
    asyncdal_client: AsyncClient, rollback_database: Database
) -> None:
    post_id = await new_post(asyncdal_client, await new_author(asyncdal_client))
    published = await asyncdal_client.post(f"/posts/{post_id}/publish")
    assert published.json()["published"] is True
    filtered = await asyncdal_client.get("/posts", params={"published": True})
    assert [post["id"] for post in filtered.json()["items"]] == [post_id]
    async with rollback_database.read_only_unit_of_work() as uow:
        events = (await uow.session.execute(select(outbox.c.event_type, outbox.c.payload))).all()
    assert events == [("post.published", {"id": post_id, "title": "Hello"})]


async def test_a_deleted_post_is_gone(asyncdal_client: AsyncClient) -> None:
    post_id = await new_post(asyncdal_client, await new_author(asyncdal_client))
    assert (await asyncdal_client.delete(f"/posts/{post_id}")).status_code == 204
    assert (await asyncdal_client.get(f"/posts/{post_id}")).status_code == 404
