"""Observability: metrics, health, logging and the request-id middleware.

Internal: applications import from ``asyncdal`` (health, logging, request ids) and
``asyncdal.metrics`` (Prometheus, the ``metrics`` extra).
"""
