"""The blog API, written with asyncdal's CRUD helpers: what issue 14's newcomer should have
needed to write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict

from asyncdal import Database, Databases, ListQuery, Page
from asyncdal.fastapi import (
    check_if_match,
    databases_lifespan,
    etag_of,
    list_query,
    repository_provider,
    setup,
)
from tests.blog import Post, PostRepository

Posts = Annotated[PostRepository, Depends(repository_provider(PostRepository))]
ReadPosts = Annotated[PostRepository, Depends(repository_provider(PostRepository, read_only=True))]
PostQuery = Annotated[ListQuery, Depends(list_query(PostRepository))]


class AuthorRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str


class PostRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str
    slug: str | None
    rating: Decimal | None
    published_on: date | None
    version: int
    author: AuthorRead


class PostWrite(BaseModel):
    author_id: int
    title: str
    slug: str | None = None
    rating: Decimal | None = None
    published_on: date | None = None


class PostEdit(BaseModel):
    title: str | None = None
    rating: Decimal | None = None


def create_app(
    build: Callable[[], Databases], before_commit: Callable[[int], Awaitable[object]]
) -> FastAPI:
    """The app; ``before_commit(post_id)`` runs between a handler's read and its write (the
    tests change the row there, as a concurrent request would)."""
    app = FastAPI(lifespan=databases_lifespan(build))
    setup(app)

    @app.get("/posts")
    async def list_posts(
        query: PostQuery, posts: ReadPosts, q: str | None = None
    ) -> Page[PostRead]:
        scope = {"title__icontains": q} if q else {}
        return await posts.page(query, filters=scope, load=["author"])

    @app.get("/authors/{author_id}/posts")
    async def list_author_posts(
        author_id: int, query: PostQuery, posts: ReadPosts
    ) -> Page[PostRead]:
        return await posts.page(query, filters={"author_id": author_id}, load=["author"])

    @app.get("/posts/{post_id}")
    async def read_post(post_id: int, posts: ReadPosts, response: Response) -> PostRead:
        post = await posts.get_one(post_id, load=["author"])
        response.headers["ETag"] = etag_of(post)
        return post  # type: ignore[return-value]

    @app.post("/posts", status_code=201)
    async def create_post(body: PostWrite, posts: Posts, response: Response) -> PostRead:
        post = await posts.add(Post(**body.model_dump()))
        post = await posts.get_one(post.id, load=["author"])
        response.headers["ETag"] = etag_of(post)
        return post  # type: ignore[return-value]

    @app.patch("/posts/{post_id}")
    async def edit_post(
        post_id: int, body: PostEdit, request: Request, response: Response, posts: Posts
    ) -> PostRead:
        post = await posts.get_one(post_id, load=["author"])
        check_if_match(request, post, required=True)
        await before_commit(post_id)
        await posts.update(post, **body.model_dump(exclude_unset=True))
        response.headers["ETag"] = etag_of(post)
        return post  # type: ignore[return-value]

    @app.put("/posts/{post_id}/title")
    async def set_title_in_place(post_id: int, title: str, posts: Posts) -> dict[str, str]:
        post = await posts.get_one(post_id)
        await before_commit(post_id)
        post.title = title  # flushed by the commit before the response
        return {"title": title}

    @app.delete("/posts/{post_id}", status_code=204)
    async def delete_post(post_id: int, request: Request, posts: Posts) -> None:
        post = await posts.get_one(post_id)
        check_if_match(request, post)
        await posts.delete(post)

    return app


def databases(database: Database) -> Callable[[], Databases]:
    """Build the app's registry on the same server and database as ``database``."""
    return lambda: Databases({"main": Database("main", database.settings)})
