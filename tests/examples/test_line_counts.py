"""Issue 14's measure: the blog service and its tests take fewer lines with asyncdal than with
advanced-alchemy's documented patterns (``python -m bench.lines`` prints the table)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.lines import Count, code_lines, count, table


def test_blank_lines_comments_and_docstrings_do_not_count() -> None:
    source = '''"""A module docstring,
over two lines."""

import os  # a comment after code counts as its line


# a comment alone
def f() -> str:
    """A function's docstring."""
    text = """a string that is no docstring
    counts on each line"""
    return text


class C:
    """A class docstring."""

    x = 1
'''
    assert code_lines(source) == 7


def test_a_file_with_nothing_but_a_docstring_counts_nothing() -> None:
    assert code_lines('"""Only this."""\n') == 0


def test_service_and_tests_are_counted_apart(tmp_path: Path) -> None:
    (tmp_path / "shop" / "tests").mkdir(parents=True)
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "app.py").write_text("a = 1\nb = 2\n")
    (tmp_path / "shop" / "tests" / "test_app.py").write_text("def test() -> None:\n    pass\n")
    assert count("shop", tmp_path) == Count("shop", service=2, tests=2)


def test_the_asyncdal_blog_is_the_shorter() -> None:
    asyncdal, advanced_alchemy = count("blog_asyncdal"), count("blog_advanced_alchemy")
    shown = table([asyncdal, advanced_alchemy])
    print(f"\n{shown}")
    assert asyncdal.service < advanced_alchemy.service, shown
    assert asyncdal.total < advanced_alchemy.total, shown


def test_a_missing_package_is_an_error_not_zero_lines(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no package at"):
        count("gone", tmp_path)
