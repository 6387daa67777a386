"""Prometheus metrics of every database: pools, statements, retries, circuit breakers.

Needs the ``metrics`` extra (``prometheus-client``).

Example:
    >>> from asyncdal.metrics import DatabaseMetrics
    >>> metrics = DatabaseMetrics()
    >>> metrics.instrument(databases.main)
"""

from asyncdal.observe._metrics import CONTENT_TYPE, DatabaseMetrics

__all__ = ["CONTENT_TYPE", "DatabaseMetrics"]
