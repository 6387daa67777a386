"""A fresh project of a user's own, in a temporary folder, whose commands run as subprocesses.

The commands are this virtualenv's (``asyncdal``, ``alembic``, ``pytest``), run in the project's
folder with an environment of its own: nothing of this process's settings (``DATABASE_URL``,
``DB__*``, ``TEST_DATABASE_URL``, ``PYTEST_*``) leaks in, so the project sees only what a test
hands it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Done", "FreshProject"]

BIN = Path(sys.executable).parent

# This process's variables a user's project would not have.
_OURS = ("DATABASE_URL", "DB__", "TEST_DATABASE_URL", "PYTEST_", "OUTBOX__", "COV_")


@dataclass(frozen=True)
class Done:
    """A finished command: its exit code and its output (stdout and stderr, interleaved)."""

    code: int
    output: str


@dataclass(frozen=True)
class FreshProject:
    """A user's project: a folder, the files a test writes in it, and the commands it runs."""

    root: Path

    def write(self, relative: str, text: str) -> Path:
        """Write ``text`` (dedented) to ``relative``, creating its folders."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def environment(self, **variables: str) -> dict[str, str]:
        """This process's environment without our settings, plus ``variables``."""
        kept = {
            name: value for name, value in os.environ.items() if not name.upper().startswith(_OURS)
        }
        return {**kept, **variables}

    async def run(self, program: str, *arguments: str, timeout: float = 180, **env: str) -> Done:
        """Run ``program`` of this virtualenv in the project's folder, with ``env`` set."""
        process = await asyncio.create_subprocess_exec(
            str(BIN / program),
            *arguments,
            cwd=self.root,
            env=self.environment(**env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return Done(process.returncode, output.decode())
