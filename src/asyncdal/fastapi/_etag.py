"""Optimistic concurrency over HTTP: ``ETag`` from the version column, ``If-Match`` on writes.

A read sends the object's version as its ``ETag``; a client that writes sends it back in
``If-Match``. :func:`check_if_match` refuses a write whose ``If-Match`` names another version
with :class:`~asyncdal.errors.StaleVersionError`, which ``setup(app)`` answers with 412; the
version column makes the ``UPDATE`` itself refuse a row changed in between (412 too).

Example:
    >>> @app.get("/posts/{post_id}")
    ... async def read_post(post_id: int, posts: Posts, response: Response) -> PostRead:
    ...     post = await posts.get_one(post_id)
    ...     response.headers["ETag"] = etag_of(post)
    ...     return post
    >>> @app.patch("/posts/{post_id}")
    ... async def edit_post(post_id: int, body: PostEdit, request: Request, response: Response,
    ...                     posts: Posts) -> PostRead:
    ...     post = await posts.get_one(post_id)
    ...     check_if_match(request, post, required=True)
    ...     await posts.update(post, **body.model_dump(exclude_unset=True))
    ...     response.headers["ETag"] = etag_of(post)
    ...     return post
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request

from asyncdal.errors import StaleVersionError
from asyncdal.orm._versions import version_attribute

__all__ = ["check_if_match", "etag_of"]


def etag_of(obj: Any) -> str:
    """The strong ``ETag`` of an object: its version, quoted (``"3"``).

    Raises:
        TypeError: the model has no version column (``__mapper_args__ =
            {"version_id_col": ...}``).
    """
    name = version_attribute(type(obj))
    if name is None:
        raise TypeError(
            f"{type(obj).__name__} has no version column: add one and "
            "__mapper_args__ = {'version_id_col': ...} to give it an ETag"
        )
    return f'"{getattr(obj, name)}"'


def _entity_tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def check_if_match(request: Request, obj: Any, *, required: bool = False) -> None:
    """Refuse the request unless its ``If-Match`` names the object's current version.

    ``If-Match: *`` matches any version; weak tags (``W/"3"``) never match, as RFC 9110's
    strong comparison says. Without the header the write goes ahead, unless ``required``.

    Args:
        request: the request.
        obj: the object about to be changed (as read in this request).
        required: answer 428 when the header is missing.

    Raises:
        StaleVersionError: ``If-Match`` names other versions (412 through ``setup(app)``).
        HTTPException: 428 when ``required`` and the header is missing.
    """
    header = request.headers.get("if-match")
    if header is None:
        if required:
            raise HTTPException(
                428, "If-Match is required: send the ETag of the version you are changing"
            )
        return
    tags = _entity_tags(header)
    current = etag_of(obj)
    if "*" in tags or current in tags:
        return
    raise StaleVersionError(
        f"{type(obj).__name__} is at version {current}, not {header}: it changed since you "
        "read it; read it again",
        model=type(obj).__name__,
        expected=header,
        actual=current,
    )
