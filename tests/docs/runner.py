"""Run the code blocks of a Markdown page, so that a snippet that stops working fails CI.

The conventions a page follows (README.md and every page under ``docs/``):

- Each ``python`` block runs, in the order of the page, in one namespace per page: a block may
  use what an earlier block of the same page defined. Top-level ``await`` and ``async with``
  work, as in an asyncio REPL.
- A block (``python``, ``toml``, ``ini``...) whose first line is ``# file: PATH`` is not run but
  written to ``PATH`` in the page's project folder, which is the working directory while the
  page runs and is on ``sys.path`` (so a later block can import a module written this way).
- When the page wrote test files (``test_*.py``), ``pytest`` runs in the project folder after the
  last block, and must pass: that is how a page shows a user's own test setup.
- Other blocks (``sh``, ``yaml``, output) are not run.

The page runs in an interpreter of its own (``python -m tests.docs.runner PAGE PROJECT``), so
what it sets up globally (instrumentation, logging) stays there, with ``DATABASE_URL``
pointing at a throwaway database of its own, and ``DB__REFERENCE__URL`` at a second one, so it
can show several named databases. Fences may be indented (a block inside a list item).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
_FILE = re.compile(r"^#\s*file:\s*(\S+)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    line: int
    language: str
    source: str

    @property
    def target(self) -> str | None:
        """The file this block is written to (``# file: PATH``), or None."""
        first = self.source.split("\n", 1)[0]
        match = _FILE.match(first)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order, with the line each starts on."""
    text = page.read_text()
    return [
        Block(
            page,
            text.count("\n", 0, match.start()) + 1,
            match.group(2),
            textwrap.dedent(match.group(3)),
        )
        for match in _FENCE.finditer(text)
    ]


async def run_page(page: Path, project: Path, environment: dict[str, str]) -> None:
    """Run every block of ``page`` as the conventions above say.

    Raises:
        AssertionError: a block failed (naming the page and line), or the page's tests did.
    """
    # A module of its own in sys.modules: SQLAlchemy and FastAPI resolve annotations there.
    module = types.ModuleType(f"page_{page.stem.lower()}")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    saved_environment = dict(os.environ)
    saved_cwd = Path.cwd()
    os.environ.update(environment)
    os.chdir(project)
    sys.path.insert(0, str(project))
    try:
        for block in blocks_of(page):
            target = block.target
            if target is not None:
                path = project / target
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.source.split("\n", 1)[1])
            elif block.language == "python":
                await _run_block(block, namespace)
    finally:
        del sys.modules[module.__name__]
        for name, loaded in list(sys.modules.items()):  # the page's own modules (shop.py, ...)
            if str(getattr(loaded, "__file__", None) or "").startswith(str(project)):
                del sys.modules[name]
        sys.path.remove(str(project))
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environment)
    if list(project.rglob("test_*.py")):
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=project,
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, (
            f"the tests {page.name} shows failed:\n{result.stdout}\n{result.stderr}"
        )


async def _run_block(block: Block, namespace: dict[str, Any]) -> None:
    # Line numbers in tracebacks point into the page.
    source = "\n" * (block.line) + block.source
    try:
        code = compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # the page's own code, on purpose
        if inspect.iscoroutine(result):
            await result
    except Exception as error:
        raise AssertionError(f"the block at {block} failed: {error!r}") from error


def main() -> None:
    """``python -m tests.docs.runner PAGE PROJECT``: run one page (exit 1 with the reason)."""
    page, project = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        asyncio.run(run_page(page, project, {}))
    except AssertionError as error:
        print(error, file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
