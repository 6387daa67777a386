"""``asyncdal holders``: the server's view of who holds the app's connections, and an app's own
from its /health/ready."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

from tests.conftest import plain

ASYNCDAL = Path(sys.executable).parent / "asyncdal"


async def run(*arguments: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
    clean.pop("DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        str(ASYNCDAL),
        "holders",
        *arguments,
        env={**clean, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_lists_the_apps_backends_in_a_transaction_longest_first(
    test_database_url: URL, tmp_path: Path
) -> None:
    dsn = plain(test_database_url.set(drivername="postgresql"))
    # The app's connections: one tagged with a request id, in a transaction; one idle.
    busy = await asyncpg.connect(dsn, server_settings={"application_name": "cli-app:req-7"})
    idle = await asyncpg.connect(dsn, server_settings={"application_name": "cli-app"})
    try:
        await busy.execute("BEGIN; SELECT 1")
        code, out, err = await run(
            env={"DATABASE_URL": plain(test_database_url), "DB__MAIN__APPLICATION_NAME": "cli-app"},
            cwd=tmp_path,
        )
    finally:
        await busy.close()
        await idle.close()
    assert code == 0, err
    held = json.loads(out)["main"]
    assert [(row["state"], row["request_id"]) for row in held] == [("idle in transaction", "req-7")]
    assert held[0]["pid"] > 0


async def test_an_app_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    from asyncdal.testing import spare_port

    code, _, err = await run(
        "--url", f"http://127.0.0.1:{spare_port()}/health/ready", env={}, cwd=tmp_path
    )
    assert code == 2
    assert "cannot read" in err


async def test_url_prints_the_holders_an_app_reports(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    holder = {"owner": "GET /hold", "request_id": "r-1", "node": "primary"}
    report = {"status": "down", "databases": {"main": {"holders": [holder]}}}

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(report).encode()
            self.send_response(503)  # not ready: the report comes all the same
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health/ready"
        code, out, err = await run("--url", url, env={}, cwd=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert code == 0, err
    assert json.loads(out) == {"main": [holder]}
