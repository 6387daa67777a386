"""The hold-time metric: how long connections stay checked out, per route template.

``asyncdal_connection_hold_seconds`` (histogram; labels ``database``, ``node`` and ``route``:
the route template of the request that held the connection, ``background`` outside requests).
Fed when a connection is returned, by the database's safety nets, which follow checkouts only
with ``LEAK_DETECTION_SECONDS`` or ``IDLE_HOLD_SECONDS`` on. Route templates are a bounded set;
past :data:`MAX_ROUTES` distinct ones per database, the rest count as ``other``.

Counted here and given to the registry at scrape time, not kept in a ``prometheus_client``
``Histogram``: fed through ``observe`` (a lock for the sum, a loop over the bounds, a lock for
the bucket), the listener cost about 10,000 instructions a connection's return (valgrind), of
some 1,100,000 for a whole request of the catalog's ``GET /products/{id}``; with a bisect and
two additions, about 2,800. The samples are the ones ``Histogram`` gives, in its order.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from asyncdal.observe._prometheus import created_series_on
from asyncdal.orm._database import Database

__all__ = ["MAX_ROUTES", "HoldMetrics"]

MAX_ROUTES = 200
"""Distinct ``route`` labels per database before the rest are counted as ``other``."""
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_NAME = "asyncdal_connection_hold_seconds"
_HELP = "Time a connection stayed checked out, by the route template that held it"
_LABELS = ("database", "node", "route")
# The ``le`` labels as Histogram writes them (its untyped floatToGoString gives repr for these).
_LE = (*(repr(float(bound)) for bound in _BUCKETS), "+Inf")


class _Series:
    """One (database, node, route)'s observations: a count per bucket (not cumulative; the
    last one past every bound) and their sum."""

    __slots__ = ("counts", "created", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0
        self.created = time.time()


class HoldMetrics:
    """The hold-time histogram, in ``registry`` (a collector of its own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series: dict[tuple[str, str, str], _Series] = {}
        registry.register(self)

    def describe(self) -> list[Metric]:
        """The metric, without samples (the registry checks its names with it)."""
        return [Metric(_NAME, _HELP, "histogram")]

    def collect(self) -> Iterator[Metric]:
        """The samples ``Histogram`` would give for the same observations."""
        metric = Metric(_NAME, _HELP, "histogram")
        created = created_series_on()
        # A copy: connections return (from another event loop's thread) while this runs.
        for values, series in list(self._series.items()):
            labels = dict(zip(_LABELS, values, strict=True))
            cumulative = 0.0
            for le, count in zip(_LE, list(series.counts), strict=True):
                cumulative += count
                metric.add_sample(f"{_NAME}_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(f"{_NAME}_count", labels, cumulative)
            metric.add_sample(f"{_NAME}_sum", labels, series.total)
            # prometheus_client's own switch (PROMETHEUS_DISABLE_CREATED_SERIES) for these.
            if created:
                metric.add_sample(f"{_NAME}_created", labels, series.created)
        yield metric

    def instrument(self, database: Database) -> None:
        """Observe every return of a connection of ``database``."""
        name = database.name
        found = self._series
        # The series of each (node, route), kept under that key: one lookup per return.
        series_of: dict[tuple[str, str], _Series] = {}
        routes: set[str] = set()

        def returned(node: str, route: str, seconds: float) -> None:
            series = series_of.get((node, route))
            if series is None:
                key = (node, route)
                if route not in routes and len(routes) >= MAX_ROUTES:
                    route = "other"
                else:
                    routes.add(route)
                series = found.get((name, node, route))
                if series is None:
                    series = found[(name, node, route)] = _Series()
                if route != "other":
                    series_of[key] = series
            # The first bound not below: Histogram's ``seconds <= bound``. Without a lock, as
            # the event loop's thread is the only one to write a series; two loops in two
            # threads sharing a database may lose an increment now and then.
            series.counts[bisect_left(_BUCKETS, seconds)] += 1
            series.total += seconds

        database.safety_nets.hold_listeners.append(returned)
