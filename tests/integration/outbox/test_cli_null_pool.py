"""``asyncdal outbox counts | dead | requeue`` use a null pool, whatever sizing the server's
settings give (environment or ``.env``): one configuration serves the app and the commands."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tests.conftest import plain
from tests.integration.outbox.conftest import insert_events

ASYNCDAL = Path(sys.executable).parent / "asyncdal"


async def run_cli(folder: Path, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    """Run ``asyncdal outbox ...`` in ``folder`` (where a ``.env`` may be) with ``env``."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("DB__", "OUTBOX__"))
        and name.upper() not in {"DATABASE_URL", "AWS_LAMBDA_FUNCTION_NAME"}
    }
    process = await asyncio.create_subprocess_exec(
        str(ASYNCDAL),
        "outbox",
        *argv,
        cwd=folder,
        env={**inherited, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("source", ["environment", ".env"])
async def test_commands_run_with_pool_sizing_set(
    outbox_url: URL, sql: asyncpg.Connection, tmp_path: Path, source: str
) -> None:
    await insert_events(sql, 2)
    await sql.execute("UPDATE asyncdal_outbox SET status = 'dead' WHERE id = 1")
    settings = {
        "DATABASE_URL": plain(outbox_url),
        "DB__MAIN__POOL_SIZE": "7",
        "DB__MAIN__MAX_OVERFLOW": "3",
    }
    if source == ".env":
        (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        env: dict[str, str] = {}
    else:
        env = settings

    code, out, err = await run_cli(tmp_path, env, "counts")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"pending": 1, "leased": 0, "done": 0, "dead": 1}

    code, out, err = await run_cli(tmp_path, env, "dead")
    assert (code, err) == (0, "")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [1]

    code, out, err = await run_cli(tmp_path, env, "requeue", "--all")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"requeued": [1]}


async def test_an_explicit_null_pool_with_a_size_is_still_refused_naming_it(
    outbox_url: URL, tmp_path: Path
) -> None:
    env = {
        "DATABASE_URL": plain(outbox_url),
        "DB__MAIN__POOL": "null",
        "DB__MAIN__POOL_SIZE": "7",
    }
    code, out, err = await run_cli(tmp_path, env, "counts")
    assert (code, out) == (2, "")
    assert "DB__MAIN__POOL_SIZE: cannot be set when the pool is null" in err
    assert "Traceback" not in err
    assert "validation error" not in err  # no raw pydantic dump
