"""Prometheus metrics of an outbox worker, like :class:`asyncdal.metrics.DatabaseMetrics`.

Pass the same registry to both to serve them together:

    >>> registry = CollectorRegistry()
    >>> database_metrics = DatabaseMetrics(registry)
    >>> outbox_metrics = OutboxMetrics(registry)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["OutboxMetrics"]

_HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class OutboxMetrics:
    """Counters and histograms of one worker process.

    Args:
        registry: where to register; a new ``CollectorRegistry`` when omitted.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.claimed = Counter(
            "asyncdal_outbox_claimed", "Events claimed (leased)", registry=self.registry
        )
        self.done = Counter(
            "asyncdal_outbox_done", "Events handled", ["event_type"], registry=self.registry
        )
        self.retried = Counter(
            "asyncdal_outbox_retried",
            "Handler failures scheduled for a retry",
            ["event_type"],
            registry=self.registry,
        )
        self.dead = Counter(
            "asyncdal_outbox_dead",
            "Events given up after the last attempt",
            ["event_type"],
            registry=self.registry,
        )
        self.handler_duration = Histogram(
            "asyncdal_outbox_handler_seconds",
            "Handler run time",
            ["event_type"],
            registry=self.registry,
            buckets=_HANDLER_BUCKETS,
        )
        self.delivery_delay = Histogram(
            "asyncdal_outbox_delivery_delay_seconds",
            "From the event's insert to its settling as done",
            registry=self.registry,
            buckets=_DELAY_BUCKETS,
        )
        self.oldest_pending_age = Gauge(
            "asyncdal_outbox_oldest_pending_seconds",
            "Age of the oldest event not yet done, pending or leased (0 when none)",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """All metrics of the registry in Prometheus text format."""
        return generate_latest(self.registry)
