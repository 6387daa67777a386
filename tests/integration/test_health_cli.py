"""``asyncdal health``: the readiness report from the command line, with its exit code."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from sqlalchemy.engine import URL

from asyncdal.testing import spare_port
from tests.conftest import plain

ASYNCDAL = Path(sys.executable).parent / "asyncdal"


async def run(env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
    clean.pop("DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        str(ASYNCDAL),
        "health",
        "--answer-within",
        "2",
        env={**clean, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_ready_exits_0_with_the_report(test_database_url: URL, tmp_path: Path) -> None:
    code, out, _ = await run({"DATABASE_URL": plain(test_database_url)}, tmp_path)
    assert code == 0
    report = json.loads(out)
    assert report["status"] == "ok"
    assert report["databases"]["main"]["status"] == "ok"


async def test_down_exits_1_without_secrets(test_database_url: URL, tmp_path: Path) -> None:
    port = spare_port()
    env = {
        "DATABASE_URL": plain(test_database_url),
        "DB__AUDIT__HOST": "127.0.0.1",
        "DB__AUDIT__PORT": str(port),
        "DB__AUDIT__PASSWORD": "s3cr@t:/%#?",
    }
    code, out, err = await run(env, tmp_path)
    assert code == 1
    assert json.loads(out)["databases"]["audit"]["status"] == "down"
    assert "s3cr" not in out + err


async def test_bad_settings_exit_2(tmp_path: Path) -> None:
    code, _, err = await run({"DATABASE_URL": "mysql://u:hunter2@h/n"}, tmp_path)
    assert code == 2
    assert "DB__MAIN__URL" in err
    assert "hunter2" not in err
