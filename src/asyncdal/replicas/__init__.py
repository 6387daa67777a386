"""The replica layer: the routing session (reads to replicas, writes to the primary),
read-your-writes by WAL position, and the background replica check.

Internal: applications import from ``asyncdal``. It builds on the engine layer; the ORM layer
(``Database``) composes it.
"""
