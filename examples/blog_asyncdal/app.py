"""The blog's HTTP API: authors, their posts, and a ``post.published`` event.

Run it with ``DATABASE_URL=postgresql://... uvicorn blog_asyncdal.app:app``.
"""

from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict

from asyncdal import Databases, ListQuery, Page, UnitOfWork, load_settings
from asyncdal.fastapi import (
    check_if_match,
    databases_lifespan,
    etag_of,
    list_query,
    repository_provider,
    setup,
    unit_of_work_provider,
)
from asyncdal.outbox import Outbox
from blog_asyncdal.models import Author, AuthorRepository, Post, PostRepository


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


Authors = Annotated[AuthorRepository, Depends(repository_provider(AuthorRepository))]
ReadAuthors = Annotated[
    AuthorRepository, Depends(repository_provider(AuthorRepository, read_only=True))
]
Posts = Annotated[PostRepository, Depends(repository_provider(PostRepository))]
ReadPosts = Annotated[PostRepository, Depends(repository_provider(PostRepository, read_only=True))]
PostQuery = Annotated[ListQuery, Depends(list_query(PostRepository))]
Work = Annotated[UnitOfWork, Depends(unit_of_work_provider())]

# The databases are built from the settings (DATABASE_URL) when the app starts, not on import.
app = FastAPI(
    title="Blog", lifespan=databases_lifespan(lambda: Databases.from_settings(load_settings()))
)
# Commits each request's unit of work before the response starts; 404, 409, 412, 422 answers.
setup(app)


@app.post("/authors", status_code=201, response_model=AuthorOut)
async def create_author(body: AuthorIn, authors: Authors) -> Author:
    return await authors.add(Author(**body.model_dump()))  # a taken email: 409


@app.get("/authors/{author_id}", response_model=AuthorWithPosts)
async def read_author(author_id: int, authors: ReadAuthors) -> Author:
    return await authors.get_one(author_id, load=["posts"])  # none: 404


@app.post("/posts", status_code=201, response_model=PostOut)
async def create_post(body: PostIn, posts: Posts, response: Response) -> Post:
    post = await posts.add(Post(**body.model_dump()))  # an unknown author: 409
    response.headers["ETag"] = etag_of(post)
    return post


@app.get("/posts", response_model=Page[PostOut])
async def list_posts(query: PostQuery, posts: ReadPosts) -> Page[Post]:
    return await posts.page(query)


@app.get("/posts/{post_id}", response_model=PostOut)
async def read_post(post_id: int, posts: ReadPosts, response: Response) -> Post:
    post = await posts.get_one(post_id)
    response.headers["ETag"] = etag_of(post)
    return post


@app.patch("/posts/{post_id}", response_model=PostOut)
async def change_post(
    post_id: int, body: PostChange, request: Request, response: Response, posts: Posts
) -> Post:
    post = await posts.get_one(post_id)
    check_if_match(request, post, required=True)  # none: 428; another version: 412
    await posts.update(post, **body.model_dump(exclude_unset=True))
    response.headers["ETag"] = etag_of(post)
    return post


@app.post("/posts/{post_id}/publish", response_model=PostOut)
async def publish_post(post_id: int, posts: Posts, uow: Work) -> Post:
    post = await posts.get_one(post_id)
    await posts.update(post, published=True)
    # Committed with the post, or not at all; `asyncdal outbox run` delivers it.
    await Outbox.of(uow).add("post.published", {"id": post_id, "title": post.title}, key=post_id)
    return post


@app.delete("/posts/{post_id}", status_code=204)
async def delete_post(post_id: int, posts: Posts) -> None:
    await posts.delete(await posts.get_one(post_id))
