"""bench.instructions: reading valgrind's count, and what one request costs."""

from __future__ import annotations

import pytest
from bench.instructions import FEW, MANY, instructions_per_request, total_instructions

_SUMMARY = """==123== Cachegrind, a cache and branch-prediction profiler
==123==
==123== I   refs:      1,234,567,890
"""


def test_the_total_is_read_from_cachegrinds_summary() -> None:
    assert total_instructions(_SUMMARY) == 1_234_567_890


def test_a_run_without_a_count_is_an_error_that_shows_the_output() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)no instruction count.*boom"):
        total_instructions("==1== boom")


def test_one_request_is_the_difference_over_the_requests_between_the_runs() -> None:
    per_request = 12_345
    few = 9_000_000 + FEW * per_request
    many = 9_000_000 + MANY * per_request
    assert instructions_per_request(few, many) == per_request
