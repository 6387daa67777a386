"""Routers for health (``/health/live``, ``/health/ready``) and Prometheus metrics."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from asyncdal.errors import UnitOfWorkError
from asyncdal.fastapi._lifespan import get_databases
from asyncdal.observe._health import check_health

__all__ = ["DatabaseStatus", "ReadinessReport", "health_router", "metrics_router"]


class DatabaseStatus(BaseModel):
    """One database in ``/health/ready`` (see ``asyncdal.health.DatabaseHealth``)."""

    status: Literal["ok", "down"]
    optional: bool
    latency_ms: float | None
    pool: dict[str, int]
    error: str | None
    replicas: dict[str, dict[str, Any]]
    breaker: dict[str, Any] | None
    holders: list[dict[str, Any]] = []
    """The connections held longest now (with leak or idle-hold detection on)."""


class ReadinessReport(BaseModel):
    """The body of ``/health/ready``: ``ok``, ``degraded`` (an optional database is down) or
    ``down``, and each database by name."""

    status: Literal["ok", "degraded", "down"]
    databases: dict[str, DatabaseStatus]


def health_router(*, answer_within: float = 2.0) -> APIRouter:
    """``GET /health/live`` (the process answers; no database call) and ``GET /health/ready``
    (every database: status, latency, pool usage; 503 when a required one is down).

    Args:
        answer_within: seconds each database gets to answer ``SELECT 1``.
    """
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        response_model=None,
        responses={
            200: {
                "model": ReadinessReport,
                "description": "Ready: every required database "
                "answered (an optional one may be down: degraded).",
            },
            503: {
                "model": ReadinessReport,
                "description": "Not ready: a required database is down.",
            },
        },
    )
    async def ready(request: Request) -> JSONResponse:
        report = await check_health(get_databases(request), answer_within=answer_within)
        return JSONResponse(report.as_dict(), status_code=200 if report.ready else 503)

    return router


def metrics_router() -> APIRouter:
    """``GET /metrics``: the app's :class:`~asyncdal.metrics.DatabaseMetrics` in Prometheus
    text format (from the lifespan state's ``metrics``)."""
    from asyncdal.observe._metrics import CONTENT_TYPE

    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        collected = getattr(request.state, "metrics", None)
        if collected is None:
            raise UnitOfWorkError("no metrics in the app's lifespan state")
        return Response(collected.render(), media_type=CONTENT_TYPE)

    return router
