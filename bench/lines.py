"""Lines of code of the blog service, written with asyncdal and with advanced-alchemy (issue 14).

``python -m bench.lines`` prints the table. A line counts when it holds Python code: blank
lines, comments and docstrings (the string that opens a module, class or function) do not, on
both sides alike. Each side's service is every ``.py`` file of its package outside ``tests/``;
its tests are the files in ``tests/``, the suite a user would write for that service.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXAMPLES", "Count", "code_lines", "count", "main", "table"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# The two sides of the comparison: the package's name under examples/, and its label.
SIDES = {"blog_asyncdal": "asyncdal", "blog_advanced_alchemy": "advanced-alchemy"}

# Tokens that are no code by themselves.
_NOT_CODE = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENCODING,
        tokenize.ENDMARKER,
    }
)


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def code_lines(source: str) -> int:
    """How many lines of ``source`` hold code: not blank, no comment alone, no docstring."""
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            # A string over several lines counts on each of them.
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - _docstring_lines(ast.parse(source)))


@dataclass(frozen=True)
class Count:
    """The code lines of one side: its service and its tests."""

    label: str
    service: int
    tests: int

    @property
    def total(self) -> int:
        return self.service + self.tests


def count(package: str, examples: Path = EXAMPLES) -> Count:
    """Count the code lines of ``examples/<package>``: service and ``tests/``."""
    root = examples / package
    if not (root / "__init__.py").is_file():
        raise FileNotFoundError(f"no package at {root}")
    service = tests = 0
    for path in sorted(root.rglob("*.py")):
        lines = code_lines(path.read_text(encoding="utf-8"))
        if "tests" in path.relative_to(root).parts:
            tests += lines
        else:
            service += lines
    return Count(SIDES.get(package, package), service, tests)


def table(counts: list[Count]) -> str:
    """A Markdown table of ``counts``."""
    rows = ["| blog service | service | tests | total |", "| --- | ---: | ---: | ---: |"]
    rows += [f"| {c.label} | {c.service} | {c.tests} | {c.total} |" for c in counts]
    return "\n".join(rows)


def main() -> None:
    print(table([count(package) for package in SIDES]))


if __name__ == "__main__":
    main()
