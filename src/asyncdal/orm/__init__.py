"""The ORM layer: ``Database``, ``Databases``, ``UnitOfWork``, ``Repository``, whole-unit-of-work
retry and the connection budget.

Internal: applications import from ``asyncdal``.
"""
