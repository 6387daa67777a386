"""Routers for health (``/health/live``, ``/health/ready``) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from asyncdal.errors import UnitOfWorkError
from asyncdal.fastapi._lifespan import get_databases
from asyncdal.observe._health import check_health

__all__ = ["health_router", "metrics_router"]


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

    @router.get("/ready")
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
