"""Running ``wrk`` with ``load.lua`` and reading what it measured, and the CPU a server used.

``load.lua`` prints one machine-readable line at the end of a run; :func:`run_wrk` parses it.
:func:`cpu_seconds` reads a process's CPU time from ``/proc``, so the benchmark can divide the
server's CPU by the requests it answered: a per-request cost that varies less than throughput
on a machine whose cores are shared.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LUA_SCRIPT", "WrkLoad", "WrkResult", "combined", "cpu_seconds", "run_wrk"]

LUA_SCRIPT = Path(__file__).with_name("load.lua")
_RESULT_LINE = re.compile(r"^BENCH (.*)$", re.MULTILINE)
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class WrkLoad:
    """How hard wrk loads a server."""

    threads: int
    connections: int


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds

    @property
    def error_count(self) -> int:
        """Socket errors, timeouts and non-2xx/3xx answers."""
        return sum(self.errors.values())


def combined(results: list[WrkResult]) -> WrkResult:
    """Several runs against one server as one: their requests, seconds and errors added up,
    the median of their medians and the worst of their 99th percentiles."""
    p50s = sorted(result.p50_ms for result in results)
    return WrkResult(
        requests=sum(result.requests for result in results),
        seconds=sum(result.seconds for result in results),
        errors={key: sum(result.errors[key] for result in results) for key in results[0].errors},
        p50_ms=p50s[len(p50s) // 2],
        p99_ms=max(result.p99_ms for result in results),
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``)."""
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis
    # start with the state (field 3): utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def _parse(output: str) -> WrkResult:
    match = _RESULT_LINE.search(output)
    if match is None:
        raise RuntimeError(f"no result line in wrk's output:\n{output}")
    values = {key: int(value) for key, value in (pair.split("=") for pair in match[1].split())}
    return WrkResult(
        requests=values["requests"],
        seconds=values["duration_us"] / 1e6,
        errors={key: values[key] for key in ("connect", "read", "write", "status", "timeout")},
        p50_ms=values["p50_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
    )


async def run_wrk(url: str, load: WrkLoad, duration: int, arguments: list[str]) -> WrkResult:
    """Load ``url`` with wrk for ``duration`` seconds and return what it measured.

    Args:
        url: the server's base URL.
        load: threads and connections.
        duration: seconds.
        arguments: ``load.lua``'s arguments: ``get N``, ``list`` or ``write TOKEN``.
    """
    process = await asyncio.create_subprocess_exec(
        "wrk",
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={duration}s",
        f"--script={LUA_SCRIPT}",
        url,
        "--",
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.decode().strip()}")
    return _parse(stdout.decode())
