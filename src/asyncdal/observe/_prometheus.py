"""The one place that relies on prometheus_client details beyond its documented API.

The hold-time metric (:mod:`asyncdal.observe._holds`) is a collector of its own that gives the
samples a ``Histogram`` gives, ``_created`` included unless prometheus_client's own switch
turned those off (``PROMETHEUS_DISABLE_CREATED_SERIES``, ``disable_created_metrics()``); the
switch has no public getter.

Checked by ``tests/unit/test_private_apis.py``, which fails loudly when prometheus_client changes
shape; at run time a change raises :class:`~asyncdal.engine._asyncio.DependencyChanged`, never a
silent default.
"""

from __future__ import annotations

import prometheus_client.metrics

from asyncdal.engine._asyncio import DependencyChanged

__all__ = ["created_series_on"]


def created_series_on() -> bool:
    """Whether prometheus_client gives ``_created`` samples (its ``_use_created`` switch)."""
    switch = getattr(prometheus_client.metrics, "_use_created", None)
    if not isinstance(switch, bool):
        raise DependencyChanged(
            "prometheus_client.metrics._use_created is gone or not a bool: asyncdal's "
            "hold-time metric cannot tell whether to give _created samples"
        )
    return switch
