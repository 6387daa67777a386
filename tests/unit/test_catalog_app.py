"""How the catalog app takes its routers' routes: as its own, declared the same."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route

from catalog.app import add_routes_of, create_app
from catalog.routes import router


def test_the_products_routes_are_the_apps_own_as_declared() -> None:
    app = create_app()
    own = {
        (route.path, frozenset(route.methods)): route
        for route in app.routes
        if isinstance(route, APIRoute)
    }
    for declared in router.routes:
        assert isinstance(declared, APIRoute)
        added = own[(declared.path, frozenset(declared.methods))]
        assert added.endpoint is declared.endpoint
        assert added.dependency_overrides_provider is app  # overrides reach it
        assert (added.operation_id, added.tags, added.status_code) == (
            declared.operation_id,
            declared.tags,
            declared.status_code,
        )
        assert added.response_model is declared.response_model


def test_a_route_that_is_not_fastapis_is_refused_with_its_name() -> None:
    plain = APIRouter()
    plain.routes.append(Route("/plain", lambda request: None))
    with pytest.raises(TypeError, match="/plain"):
        add_routes_of(FastAPI(), plain)
