"""A password with special characters appears in no response, log line, error or repr()."""

from __future__ import annotations

import logging
import traceback
from urllib.parse import quote

import pytest
from dependency_injector import providers
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Databases, load_settings
from asyncdal.testing import spare_port
from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.helpers import app_client

SECRET = "s3cr'et:@/%#?&=\\ \"pw"
FRAGMENTS = [SECRET, quote(SECRET, safe=""), "s3cr'et", "s3cr%27et"]


def assert_no_secret(where: str, text_seen: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text_seen, f"the password shows in {where}"


async def test_the_password_appears_nowhere(
    catalog_url: URL,
    catalog_reference_url: URL,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = load_settings(
        db={
            # The test server trusts local connections, so the password is sent and ignored.
            "main": {
                "host": catalog_url.host,
                "port": catalog_url.port,
                "user": catalog_url.username,
                "password": SECRET,
                "name": catalog_url.database,
                "slow_query_seconds": 0.001,
            },
            # The catalog needs its reference database; the password goes there too.
            "reference": {
                "host": catalog_reference_url.host,
                "port": catalog_reference_url.port,
                "user": catalog_reference_url.username,
                "password": SECRET,
                "name": catalog_reference_url.database,
            },
            "ledger": {
                "url": f"postgresql://app:{quote(SECRET, safe='')}@127.0.0.1:{spare_port()}/l",
                "optional": True,
                "connect_timeout": 1,
            },
        }
    )
    container = CatalogContainer()
    container.settings.override(providers.Object(settings))
    app = create_app(container)
    container.warm_up.override(providers.Object(False))
    seen: list[tuple[str, str]] = []
    async with app_client(app) as client:
        for path in ["/health/ready", "/products?limit=5", "/metrics", "/openapi.json"]:
            response = await client.get(path)
            seen.append((f"GET {path} ({response.status_code})", response.text))
            seen.append((f"GET {path} headers", str(response.headers)))
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["databases"]["ledger"]["status"] == "down"

        databases: Databases = await container.databases()  # type: ignore[misc]
        ledger = databases["ledger"]
        with pytest.raises(Exception) as failure:  # noqa: PT011 - any error, as a user sees it
            async with ledger.unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))
        logging.getLogger("tests.secrets").exception("ledger failed", exc_info=failure.value)
        seen.append(("the connect error", "".join(traceback.format_exception(failure.value))))
        objects: list[object] = [
            settings,
            *settings.databases.values(),
            databases,
            *databases.values(),
            *(engine for database in databases.values() for engine in database.engines()),
            *(engine.url for database in databases.values() for engine in database.engines()),
        ]
        seen.extend((f"repr({type(o).__name__})", repr(o)) for o in objects)
        seen.extend((f"str({type(o).__name__})", str(o)) for o in objects)

    seen.extend((f"log {r.name}", r.getMessage() + str(r.__dict__)) for r in caplog.records)
    out, err = capfd.readouterr()
    seen.extend([("stdout", out), ("stderr", err)])
    assert any(name.startswith("log ") for name, _ in seen)
    for where, text_seen in seen:
        assert_no_secret(where, text_seen)
