"""OpenTelemetry's official SQLAlchemy (and FastAPI) instrumentation works alongside asyncdal's.

The instrumentor wraps ``create_async_engine`` globally; asyncdal builds its engines lazily
through that function, so they are traced with no asyncdal-specific code, while asyncdal's own
metrics keep counting from the same engine events.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dependency_injector import providers
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from asyncdal import AsyncdalSettings
from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.helpers import app_client


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    # The instrumentation declares sqlalchemy < 2.1; its engine events work on 2.1 (this test).
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        yield spans, provider
    finally:
        SQLAlchemyInstrumentor().uninstrument()
        provider.shutdown()


def children_of(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    assert span.context is not None
    return [
        s for s in spans if s.context is not None and s.context.trace_id == span.context.trace_id
    ]


async def test_catalog_requests_produce_server_and_database_spans(
    catalog_settings: AsyncdalSettings,
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    spans, provider = exporter
    container = CatalogContainer()
    container.settings.override(providers.Object(catalog_settings))
    app = create_app(container)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    async with app_client(app) as client:
        spans.clear()  # startup's warm-up queries
        created = await client.post(
            "/products", json={"sku": "TR-1", "name": "Traced", "price": "1.50"}
        )
        assert created.status_code == 201
        fetched = await client.get(f"/products/{created.json()['id']}")
        assert fetched.status_code == 200
        metrics = await client.get("/metrics")

    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    assert [s.name for s in servers[:2]] == ["POST /products", "GET /products/{product_id}"]
    post_trace = children_of(servers[0], finished)
    get_trace = children_of(servers[1], finished)
    post_db = [s for s in post_trace if s.kind is SpanKind.CLIENT]
    get_db = [s for s in get_trace if s.kind is SpanKind.CLIENT]
    assert any((s.attributes or {}).get("db.statement", "").startswith("INSERT") for s in post_db)
    assert any("products" in str((s.attributes or {}).get("db.statement", "")) for s in get_db)
    assert all(s.parent is not None for s in post_db + get_db)
    # asyncdal's own metrics counted the same statements.
    assert 'asyncdal_query_seconds_count{database="main",node="primary",statement="insert"}' in (
        metrics.text
    )
