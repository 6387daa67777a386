"""The blog's HTTP API: authors, their posts, and a ``post.published`` event.

Run it with ``DATABASE_URL=postgresql+asyncpg://... uvicorn --factory
blog_advanced_alchemy.app:create_app``.
"""

import os
from datetime import datetime
from typing import Annotated, Literal

from advanced_alchemy.exceptions import IntegrityError, NotFoundError
from advanced_alchemy.extensions.fastapi import (
    AdvancedAlchemy,
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    filters,
)
from advanced_alchemy.service import OffsetPagination
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from blog_advanced_alchemy.models import Author, AuthorService, Event, Post, PostService


class AuthorIn(BaseModel):
    name: str
    email: str


class PostIn(BaseModel):
    author_id: int
    title: str
    body: str


class PostChange(BaseModel):
    title: str | None = None
    body: str | None = None


class PostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    author_id: int
    title: str
    body: str
    published: bool
    created_at: datetime


class AuthorOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    email: str


class AuthorWithPosts(AuthorOut):
    posts: list[PostOut]


# advanced-alchemy's provide_filters cannot build its search and sort parameters on this FastAPI
# (``Query(required=False)``: TypeError), so the list's parameters are declared here, as its
# FastAPI guide does for pagination; Literal and le= keep them to what the API allows (422).
def post_filters(
    author_id: int | None = None,
    published: bool | None = None,
    title__icontains: str | None = None,
    sort: Literal["id", "-id", "title", "-title", "created_at", "-created_at"] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[filters.StatementFilter]:
    chosen: list[filters.StatementFilter] = [
        filters.OrderBy(sort.removeprefix("-"), "desc" if sort.startswith("-") else "asc"),
        filters.LimitOffset(limit, offset),
    ]
    if author_id is not None:
        chosen.append(filters.CollectionFilter("author_id", [author_id]))
    if published is not None:
        chosen.append(filters.BooleanFilter("published", published))
    if title__icontains:
        chosen.append(
            filters.SearchFilter("title", title__icontains, ignore_case=True, escape_wildcards=True)
        )
    return chosen


PostFilters = Annotated[list[filters.StatementFilter], Depends(post_filters)]


def etag_of(post: Post) -> str:
    return f'"{post.version}"'


def create_app(database_url: str | None = None) -> FastAPI:
    app = FastAPI(title="Blog")
    config = SQLAlchemyAsyncConfig(
        connection_string=database_url or os.environ["DATABASE_URL"],
        session_config=AsyncSessionConfig(expire_on_commit=False),
        commit_mode="autocommit",
    )
    alchemy = AdvancedAlchemy(config=config, app=app)
    Session = Annotated[AsyncSession, Depends(alchemy.provide_session())]
    Authors = Annotated[AuthorService, Depends(alchemy.provide_service(AuthorService))]
    Posts = Annotated[PostService, Depends(alchemy.provide_service(PostService))]

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, error: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(IntegrityError)
    async def conflict(request: Request, error: IntegrityError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.post("/authors", status_code=201, response_model=AuthorOut)
    async def create_author(body: AuthorIn, authors: Authors) -> Author:
        return await authors.create(body)

    @app.get("/authors/{author_id}", response_model=AuthorWithPosts)
    async def read_author(author_id: int, authors: Authors) -> Author:
        return await authors.get(author_id, load=[Author.posts])

    @app.post("/posts", status_code=201, response_model=PostOut)
    async def create_post(body: PostIn, posts: Posts, response: Response) -> Post:
        post = await posts.create(body)
        response.headers["ETag"] = etag_of(post)
        return post

    @app.get("/posts", response_model=OffsetPagination[PostOut])
    async def list_posts(posts: Posts, post_filters: PostFilters) -> OffsetPagination[Post]:
        items, total = await posts.get_many_and_count(*post_filters)
        return posts.to_schema(items, total, filters=post_filters)

    @app.get("/posts/{post_id}", response_model=PostOut)
    async def read_post(post_id: int, posts: Posts, response: Response) -> Post:
        post = await posts.get(post_id)
        response.headers["ETag"] = etag_of(post)
        return post

    @app.patch("/posts/{post_id}", response_model=PostOut)
    async def change_post(
        post_id: int, body: PostChange, request: Request, response: Response, posts: Posts
    ) -> Post:
        post = await posts.get(post_id)
        if "If-Match" not in request.headers:
            raise HTTPException(428, "send the ETag of the version you are changing in If-Match")
        if request.headers["If-Match"] != etag_of(post):
            raise HTTPException(412, "the post changed since you read it")
        post = await posts.update(body.model_dump(exclude_unset=True), item_id=post_id)
        response.headers["ETag"] = etag_of(post)
        return post

    @app.post("/posts/{post_id}/publish", response_model=PostOut)
    async def publish_post(post_id: int, posts: Posts, session: Session) -> Post:
        post = await posts.update({"published": True}, item_id=post_id)
        # Committed with the post, or not at all.
        session.add(Event(type="post.published", payload={"id": post_id, "title": post.title}))
        return post

    @app.delete("/posts/{post_id}", status_code=204)
    async def delete_post(post_id: int, posts: Posts) -> None:
        await posts.delete(post_id)

    return app
