"""The hold-time metric: how long connections stay checked out, per route template.

``asyncdal_connection_hold_seconds`` (histogram; labels ``database``, ``node`` and ``route``:
the route template of the request that held the connection, ``background`` outside requests).
Fed when a connection is returned, by the database's safety nets, which follow checkouts only
with ``LEAK_DETECTION_SECONDS`` or ``IDLE_HOLD_SECONDS`` on. Route templates are a bounded set;
past :data:`MAX_ROUTES` distinct ones per database, the rest count as ``other``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from asyncdal.orm._database import Database

__all__ = ["MAX_ROUTES", "HoldMetrics"]

MAX_ROUTES = 200
"""Distinct ``route`` labels per database before the rest are counted as ``other``."""
_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class HoldMetrics:
    """The hold-time histogram, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hold_time = Histogram(
            "asyncdal_connection_hold_seconds",
            "Time a connection stayed checked out, by the route template that held it",
            ["database", "node", "route"],
            registry=registry,
            buckets=_BUCKETS,
        )

    def instrument(self, database: Database) -> None:
        """Observe every return of a connection of ``database``."""
        name = database.name
        histogram = self.hold_time
        # The labelled child of each (node, route), kept: labels() costs a lock and several
        # calls, on every connection's return.
        children: dict[tuple[str, str], Any] = {}
        routes: set[str] = set()

        def returned(node: str, route: str, seconds: float) -> None:
            child = children.get((node, route))
            if child is None:
                if route not in routes and len(routes) >= MAX_ROUTES:
                    route = "other"
                else:
                    routes.add(route)
                child = histogram.labels(name, node, route)
                if route != "other":
                    children[(node, route)] = child
            child.observe(seconds)

        database.safety_nets.hold_listeners.append(returned)
