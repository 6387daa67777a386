"""schemathesis over the catalog's OpenAPI, in process, against a throwaway database.

Every check schemathesis has runs on every answer, through all its phases: the schema's
examples, coverage (boundary and invalid values of each parameter), fuzzing (random valid and
invalid requests), and stateful sequences that follow the document's links (create a product,
then read, change and delete it). Any failure is a place where the service and its document
disagree, or a 500.

The run is bounded for CI (about a minute on two cores); run it longer with
``CATALOG_FUZZ_EXAMPLES`` (examples per operation and phase, default 25) and
``CATALOG_FUZZ_STEPS`` (stateful steps per scenario, default 10), and reproduce a run with
``CATALOG_FUZZ_SEED`` (the seed a run prints). No RabbitMQ is needed: the outbox only writes
its table.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
import schemathesis
from dependency_injector import providers
from fastapi import FastAPI
from hypothesis import strategies as st
from schemathesis.python import asgi
from sqlalchemy.engine import URL

from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.conftest import database_settings, empty_tables, plain

pytestmark = pytest.mark.e2e


def _config() -> schemathesis.Config:
    settings: dict[str, Any] = {
        "generation": {
            "max-examples": int(os.environ.get("CATALOG_FUZZ_EXAMPLES", "25")),
            # No .hypothesis directory: each run starts fresh, and CI has nowhere to keep one.
            "database": "none",
        },
        "phases": {
            "stateful": {
                "max-steps": int(os.environ.get("CATALOG_FUZZ_STEPS", "10")),
                # The document's own links drive the scenarios (create a product, then read,
                # change, delete it). schemathesis' dependency analysis would add links from
                # GET /products and start every scenario there, never with POST /products,
                # whose category_id it takes for a reference to a "Category" nothing produces
                # (the categories are "CategoryRead"): no scenario would reach a product.
                "inference": {"algorithms": ["location-headers"]},
            }
        },
        # Every check, and none left out: a check that is wrong about HTTP itself would be
        # disabled here, with the reason; none is.
        "checks": {"enabled": True},
    }
    if "CATALOG_FUZZ_SEED" in os.environ:
        settings["seed"] = int(os.environ["CATALOG_FUZZ_SEED"])
    return schemathesis.Config.from_dict(settings)


# X-DB-LSN's format: schemathesis' coverage phase writes header values of letters and digits
# only, so without a strategy for the format it could not write a valid WAL position
# (0/16B3748) and would send an invalid one with every case. Registered before the tests are
# collected, which is when the coverage phase's cases are built.
schemathesis.openapi.format(
    "pg_lsn", st.from_regex(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", fullmatch=True)
)

# The document is the catalog's own (building the app opens no connection); the app that
# answers is built by the fixture below, on the test databases. schemathesis collects one test
# per operation from a schema loaded at import, so the schema is read here, once.
schema = schemathesis.openapi.from_dict(create_app(CatalogContainer()).openapi(), config=_config())


@pytest.fixture(scope="module")
async def catalog_app(catalog_url: URL, catalog_reference_url: URL) -> AsyncIterator[FastAPI]:
    """The catalog on its test databases (two categories, no products), for schemathesis to
    call in process; its lifespan runs on schemathesis' own event loop thread."""
    await empty_tables(catalog_url, "products", "idempotency_keys")
    await empty_tables(catalog_reference_url, "categories")
    reference = await asyncpg.connect(plain(catalog_reference_url.set(drivername="postgresql")))
    try:
        # Categories 1 and 2, so that valid products may name one.
        await reference.execute("INSERT INTO categories (name) VALUES ('Coffee'), ('Kitchen')")
    finally:
        await reference.close()
    container = CatalogContainer()
    container.settings.override(
        providers.Object(database_settings(catalog_url, reference=catalog_reference_url))
    )
    app = create_app(container)
    print(f"schemathesis seed: {schema.config.seed} (CATALOG_FUZZ_SEED)")
    try:
        yield app
    finally:
        # schemathesis started the app's lifespan on first use; stop it, so its pools close
        # before the databases are dropped.
        await asyncio.to_thread(asgi.shutdown_lifespans)


@pytest.fixture(scope="module")
def served(catalog_app: FastAPI) -> dict[str, Any]:
    """What ``case.call`` needs to reach the app in process."""
    return {"app": catalog_app}


CATEGORIES = (1, 2)
"""The ids of the categories the fixture inserts."""


def as_a_client_would(case: schemathesis.Case) -> None:
    """Make the two choices no document can state the way a real client makes them.

    Two 422s depend on what the databases hold, not on the request's shape: a ``category_id``
    no category has (the catalog answers 422, "category 5 does not exist") and an
    ``Idempotency-Key`` used before for another body (422, as the Idempotency-Key draft says).
    Any schema-valid request may meet them, so a case that names a category names one that
    exists, and a valid key is made from the body, so one key never carries two bodies. Values
    the document refuses are left as they are, so every invalid case stays invalid.
    tests/e2e/test_categories_api.py and test_catalog_idempotency.py test both 422s.
    """
    body = case.body
    if isinstance(body, dict):
        category = body.get("category_id")
        whole = isinstance(category, int) and not isinstance(category, bool)
        if (whole or (isinstance(category, float) and category.is_integer())) and (
            1 <= category <= 2**53 - 1
        ):
            body["category_id"] = CATEGORIES[int(category) % len(CATEGORIES)]
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and 1 <= len(key) <= 200 and "\x00" not in key:
        sent = json.dumps([key, body if isinstance(body, dict) else None], sort_keys=True)
        headers["Idempotency-Key"] = hashlib.sha256(sent.encode()).hexdigest()


@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, served: dict[str, Any]
) -> None:
    as_a_client_would(case)
    case.call_and_validate(**served)


def test_sequences_of_operations_answer_as_documented(
    served: dict[str, Any], catalog_url: URL
) -> None:
    class Workflow(schema.as_state_machine()):
        def setup(self) -> None:
            # Each scenario starts from the same data: Hypothesis replays a scenario to shrink
            # it, and a replay that met other rows (other ids) would draw other values.
            with ThreadPoolExecutor(1) as thread:  # its own event loop, not the test's
                emptied = empty_tables(catalog_url, "products", "idempotency_keys")
                thread.submit(asyncio.run, emptied).result()

        def before_call(self, case: schemathesis.Case) -> None:
            as_a_client_would(case)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return served

    # The run's own settings (examples, steps, no example database), as schemathesis' stateful
    # phase takes them; without, Hypothesis' defaults apply: 100 scenarios of 50 steps.
    Workflow.run(settings=schema.config.get_hypothesis_settings(phase="stateful"))
