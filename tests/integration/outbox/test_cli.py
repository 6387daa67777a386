"""``asyncdal outbox dead | requeue | counts`` against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal.ops._cli import main
from tests.conftest import plain
from tests.integration.outbox.conftest import insert_events, status_counts


@pytest.fixture
def cli_env(outbox_url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", plain(outbox_url))


async def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["outbox", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.usefixtures("cli_env")
async def test_counts_dead_and_requeue(
    sql: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    await insert_events(sql, 4)
    await sql.execute(
        "UPDATE asyncdal_outbox SET status = 'dead', attempts = 10, last_error = 'boom ' || id "
        "WHERE id <= 3"
    )
    code, out, _ = await _run(capsys, "counts")
    assert code == 0
    assert json.loads(out) == {"pending": 1, "leased": 0, "done": 0, "dead": 3}

    code, out, _ = await _run(capsys, "dead", "--limit", "2")
    assert code == 0
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(e["id"], e["attempts"], e["last_error"]) for e in listed] == [
        (1, 10, "boom 1"),
        (2, 10, "boom 2"),
    ]

    code, out, _ = await _run(capsys, "requeue", "2")
    assert (code, json.loads(out)) == (0, {"requeued": [2]})
    row = await sql.fetchrow("SELECT status, attempts FROM asyncdal_outbox WHERE id = 2")
    assert tuple(row) == ("pending", 0)

    code, _, err = await _run(capsys, "requeue", "2", "4")  # no longer / never dead
    assert code == 1
    assert "[2, 4]" in err

    code, out, _ = await _run(capsys, "requeue", "--all")
    assert (code, json.loads(out)) == (0, {"requeued": [1, 3]})
    assert await status_counts(sql) == {"pending": 4}


@pytest.mark.usefixtures("cli_env")
async def test_requeue_needs_ids_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await _run(capsys, "requeue")
    assert code == 2
    assert "ids or --all" in err


async def test_bad_settings_name_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:s3cret-pw@127.0.0.1/x")
    monkeypatch.setenv("OUTBOX__BATCH_SIZE", "0")
    code, _, err = await _run(capsys, "counts")
    assert code == 2
    assert "OUTBOX__BATCH_SIZE" in err
    assert "s3cret-pw" not in err


async def test_run_refuses_a_bad_handlers_reference(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1/x")
    code, _, err = await _run(capsys, "run", "--handlers", "no_such_module_here:handlers")
    assert code == 2
    assert "cannot import 'no_such_module_here'" in err


async def test_database_problems_are_one_clear_line(
    server_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncdal.testing import create_test_database, drop_test_database

    unmigrated = await create_test_database(server_url, prefix="outbox_cli_test")
    try:
        monkeypatch.setenv("DATABASE_URL", plain(unmigrated))
        for command in (["counts"], ["dead"], ["requeue", "--all"]):
            code, out, err = await _run(capsys, *command)
            assert (code, out) == (2, ""), command
            assert err == (
                "asyncdal outbox: cannot use the database "
                "(outbox table asyncdal_outbox missing: run the migrations)\n"
            ), command
    finally:
        await drop_test_database(unmigrated)
    # The database is gone now.
    code, _, err = await _run(capsys, "counts")
    assert code == 2
    assert err.count("\n") == 1
    assert f'database "{unmigrated.database}" does not exist' in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("cli_env")
async def test_dead_refuses_a_negative_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        await _run(capsys, "dead", "--limit", "-1")
    assert exited.value.code == 2
    assert "argument --limit: must be 0 or more, not -1" in capsys.readouterr().err


async def test_run_imports_handlers_from_the_current_directory(tmp_path: Path) -> None:
    # A project's own module, next to where the command runs, as with uvicorn and alembic.
    (tmp_path / "project_handlers.py").write_text("def build():\n    return 42\n")
    environment = {**os.environ, "DATABASE_URL": "postgresql://u@127.0.0.1/x"}
    environment.pop("PYTHONPATH", None)
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "asyncdal"),
        *("outbox", "run", "--handlers", "project_handlers:build"),
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    # Imported (not "cannot import"), then refused for what it returned.
    assert "cannot import" not in err.decode(), err.decode()
    assert "project_handlers:build is not asyncdal.outbox.Handlers" in err.decode()
    assert process.returncode == 2
