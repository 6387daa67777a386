"""``list_query``: one dependency that reads filters, sort and page from the query string.

Its parameters are built from the repository's whitelists and the columns' types, so OpenAPI
shows each allowed filter with its type (``price__lt: number``, ``title__icontains: string``,
``tag__in: array``, ``slug__isnull: boolean``), and FastAPI parses them. Anything else is a
422 in FastAPI's format, naming the parameter: a query parameter the route does not declare,
a value the column cannot be compared with, a sort field not whitelisted, a bad cursor.

Example:
    >>> PostQuery = Annotated[ListQuery, Depends(list_query(PostRepository))]
    >>> @app.get("/posts")
    ... async def list_posts(query: PostQuery, posts: Posts) -> Page[PostRead]:
    ...     return await posts.page(query)

``GET /posts?title__icontains=sql&rating__gte=4&sort=-published_on&limit=20``, then
``GET /posts?title__icontains=sql&rating__gte=4&sort=-published_on&cursor=<next_cursor>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy import inspect as inspect_model

from asyncdal.errors import InvalidQueryError
from asyncdal.orm._cursors import MAX_CURSOR_LENGTH
from asyncdal.orm._filters import TEXT_OPERATORS, operators_for, parse_filters
from asyncdal.orm._ordering import parse_order
from asyncdal.orm._pages import ListQuery, plan_page
from asyncdal.orm._repository import Repository
from asyncdal.orm._values import MAX_BIGINT, python_type

__all__ = ["list_query"]

_PAGING = ("sort", "limit", "offset", "cursor")
_FILTER_PREFIX = "asyncdal_filter_"
_SAYS = {
    "eq": "equals",
    "ne": "differs from (a NULL never matches)",
    "lt": "is less than",
    "lte": "is at most",
    "gt": "is greater than",
    "gte": "is at least",
    "in": "is one of (repeat the parameter)",
    "contains": "contains (case-sensitive; % and _ match themselves)",
    "icontains": "contains, ignoring case",
    "startswith": "starts with",
    "istartswith": "starts with, ignoring case",
    "endswith": "ends with",
    "iendswith": "ends with, ignoring case",
    "isnull": "is NULL (true) or is not (false)",
}


def _filter_parameters(
    repository: type[Repository[Any]], operators: Mapping[str, Iterable[str]] | None
) -> list[inspect.Parameter]:
    columns = inspect_model(repository.model).columns
    if operators is not None:
        unknown = set(operators) - set(repository.filterable)
        if unknown:
            raise TypeError(f"operators= names columns that are not filterable: {sorted(unknown)}")
    parameters = []
    for name in sorted(repository.filterable):
        column = columns[name]
        kind = python_type(column.type)
        if kind is None:
            raise TypeError(
                f"{repository.__name__}.{name}: its type has no python_type, so it cannot be "
                "read from a query string; leave it out with operators="
            )
        applicable = operators_for(column)
        chosen = applicable if operators is None else tuple(operators.get(name, ()))
        for operator in chosen:
            if operator not in applicable:
                raise TypeError(f"{name}: {operator!r} does not apply to this column")
            parameter = name if operator == "eq" else f"{name}__{operator}"
            if parameter in _PAGING:
                raise TypeError(f"filter {parameter!r} would clash with the paging parameters")
            value: Any = kind
            if operator == "in":
                value = list[kind]  # type: ignore[valid-type]
            elif operator in TEXT_OPERATORS:
                value = str
            elif operator == "isnull":
                value = bool
            # Named apart and aliased: a filter named like a path parameter of the route
            # ("/authors/{author_id}/posts") must stay a query parameter.
            query = Query(alias=parameter, description=f"Only rows whose {name} {_SAYS[operator]}.")
            parameters.append(
                inspect.Parameter(
                    f"{_FILTER_PREFIX}{parameter}",
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[value | None, query],
                )
            )
    return parameters


def _paging_parameters(repository: type[Repository[Any]]) -> list[inspect.Parameter]:
    sortable = ", ".join(sorted(repository.sortable)) or "none"
    documented: dict[str, Any] = {
        "sort": Annotated[
            str | None,
            Query(
                description=(
                    "Comma-separated fields, '-' first for descending (NULLs sort last "
                    f"ascending, first descending). Sortable: {sortable}."
                ),
            ),
        ],
        "limit": Annotated[
            int | None,
            Query(
                ge=1,
                le=repository.max_page_size,
                description=f"Page size (default {repository.default_page_size}).",
            ),
        ],
        "offset": Annotated[
            int | None, Query(ge=0, le=MAX_BIGINT, description="Rows to skip; not with cursor.")
        ],
        "cursor": Annotated[
            str | None,
            Query(
                max_length=MAX_CURSOR_LENGTH,
                description="The next_cursor of the previous page, to continue after it.",
            ),
        ],
    }
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
        for name, kind in documented.items()
    ]


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route and its dependencies declare (a pydantic model of query
    parameters stands for its fields)."""
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        for field in current.query_params:
            model = getattr(field, "type_", None) or getattr(field.field_info, "annotation", None)
            if isinstance(model, type) and issubclass(model, BaseModel):
                names.update(info.alias or name for name, info in model.model_fields.items())
            else:
                names.add(field.alias)
        pending.extend(current.dependencies)
    return names


def list_query(
    repository: type[Repository[Any]],
    *,
    operators: Mapping[str, Iterable[str]] | None = None,
) -> Callable[..., Awaitable[ListQuery]]:
    """A FastAPI dependency giving a checked :class:`~asyncdal.ListQuery` for ``repository``.

    Args:
        repository: the repository class whose whitelists, page sizes and model's column
            types decide the parameters.
        operators: the operators offered per filterable column (``{"title": ["icontains"],
            "rating": ["gte", "lte"]}``); a column left out gets none. Default: every
            operator that applies to each filterable column.

    Returns:
        A dependency for ``Depends``; it raises ``RequestValidationError`` (422) for unknown
        query parameters, repeated single-valued ones, and anything the repository refuses.

    Raises:
        TypeError: ``operators`` names a column that is not filterable or an operator that
            does not apply, or a filterable column has a type with no Python type.

    Example:
        >>> PostQuery = Annotated[ListQuery, Depends(list_query(PostRepository))]
    """
    filters = _filter_parameters(repository, operators)
    paging = _paging_parameters(repository)
    own = {parameter.name.removeprefix(_FILTER_PREFIX) for parameter in [*filters, *paging]}
    single = own - {name for name in own if name.endswith("__in")}

    def allowed(request: Request) -> set[str]:
        # Walked per request: a few short lists, and nothing to keep in step with the app.
        dependant = getattr(request.scope.get("route"), "dependant", None)
        return own if dependant is None else _query_names(dependant)

    async def dependency(asyncdal_request: Request, **given: Any) -> ListQuery:
        errors: list[dict[str, Any]] = []

        def refuse(parameter: str, message: str, kind: str = "value_error") -> None:
            errors.append({"type": kind, "loc": ("query", parameter), "msg": message})

        known = allowed(asyncdal_request)
        for name in asyncdal_request.query_params:
            if name not in known:
                refuse(name, f"unknown query parameter {name!r}", "extra_forbidden")
            elif name in single and len(asyncdal_request.query_params.getlist(name)) > 1:
                refuse(name, f"{name!r} may be given once")
        chosen = {
            name.removeprefix(_FILTER_PREFIX): value
            for name, value in given.items()
            if name.startswith(_FILTER_PREFIX) and value is not None
        }
        for name, value in chosen.items():
            try:
                parse_filters(repository.model, repository.filterable, {name: value})
            except InvalidQueryError as error:
                refuse(name, str(error))
        sort = tuple(field.strip() for field in (given["sort"] or "").split(",") if field.strip())
        try:
            parse_order(repository.model, repository.sortable, repository.default_order, sort)
        except InvalidQueryError as error:
            refuse("sort", str(error))
        query = ListQuery(chosen, sort, given["limit"], given["offset"], given["cursor"])
        if not errors:
            try:
                plan_page(repository, query=query)
            except InvalidQueryError as error:
                refuse("cursor" if query.cursor is not None else "query", str(error))
        if errors:
            raise RequestValidationError(errors)
        return query

    request_parameter = inspect.Parameter(
        "asyncdal_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
    )
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [request_parameter, *paging, *filters], return_annotation=ListQuery
    )
    dependency.__name__ = f"{repository.__name__.lower()}_list_query"
    return dependency
