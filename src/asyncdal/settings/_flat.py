"""The flat names of the grouped settings: the environment's names, and the keyword arguments
code may pass.

The environment stays flat (``DB__MAIN__POOL_SIZE``, ``DB__MAIN__CONNECT_TIMEOUT``): each flat
name is a key of :data:`FLAT_NAMES`, which says which group and field it fills. The same table
nests keyword arguments (``DatabaseSettings(pool_size=5)``) and lets an error name the variable a
user sets (``DB__MAIN__POOL_SIZE: ...``) rather than a path inside the model.

Example:
    >>> FLAT_NAMES["pool_size"]
    ('pool', 'size')
    >>> nest({"url": "postgresql://db/shop", "pool_size": 5, "connect_timeout": 2})
    {'url': 'postgresql://db/shop', 'pool': {'size': 5}, 'timeouts': {'connect': 2}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asyncdal.settings._groups import GROUPS, FrozenSettings

__all__ = ["ENV_NAMES", "FLAT_NAMES", "SIZING_FIELDS", "nest"]

FLAT_NAMES: Mapping[str, tuple[str, str]] = {
    "pool": ("pool", "kind"),
    "pool_size": ("pool", "size"),
    "max_overflow": ("pool", "max_overflow"),
    "pool_timeout": ("pool", "timeout"),
    "pool_recycle": ("pool", "recycle"),
    "pre_ping": ("pool", "pre_ping"),
    "connect_timeout": ("timeouts", "connect"),
    "command_timeout": ("timeouts", "command"),
    "statement_timeout": ("timeouts", "statement"),
    "lock_timeout": ("timeouts", "lock"),
    "idle_in_transaction_session_timeout": ("timeouts", "idle_in_transaction"),
    "retry_attempts": ("retry", "attempts"),
    "retry_base_delay": ("retry", "base_delay"),
    "retry_max_delay": ("retry", "max_delay"),
    "breaker_failure_threshold": ("breaker", "failure_threshold"),
    "breaker_cool_down": ("breaker", "cool_down"),
    "replicas": ("replicas", "urls"),
    "replica_weights": ("replicas", "weights"),
    "replica_pool_size": ("replicas", "pool_size"),
    "replica_max_overflow": ("replicas", "max_overflow"),
    "max_replica_lag": ("replicas", "max_lag"),
    "replica_check_interval": ("replicas", "check_interval"),
    "slow_query_seconds": ("observability", "slow_query_seconds"),
    "tag_requests": ("observability", "tag_requests"),
    "pgbouncer": ("pooler", "transaction_mode"),
    "lazy_loads": ("safety", "lazy_loads"),
    "max_queries_per_request": ("safety", "max_queries_per_request"),
    "leak_detection_seconds": ("safety", "leak_detection_seconds"),
    "idle_hold_seconds": ("safety", "idle_hold_seconds"),
    "request_timeout": ("safety", "request_timeout"),
}
"""Each grouped setting's flat name (its environment name, lower-case: ``pool_size`` is
``DB__<NAME>__POOL_SIZE``) and the group and field it fills."""

SIZING_FIELDS = ("pool_size", "max_overflow", "replica_pool_size", "replica_max_overflow")
"""The settings (flat names) that size a ``queue`` pool, which a null pool has no use for."""

ENV_NAMES: Mapping[tuple[str, str], str] = {place: flat for flat, place in FLAT_NAMES.items()}
"""The other way round: each group's field and its flat name."""


def _is_group_value(group: str, value: Any) -> bool:
    """Whether ``value``, given under a group's name, is the group, or the flat setting that
    shares the name (``pool="null"`` is ``POOL``, ``replicas="postgresql://r1"`` is
    ``REPLICAS``)."""
    if group not in FLAT_NAMES:
        return True
    return isinstance(value, (Mapping, GROUPS[group]))


def nest(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every flat name moved into its group: ``{"pool_size": 5}`` becomes
    ``{"pool": {"size": 5}}``. Groups given whole (a mapping or a model) are kept, merged with
    the flat names of the same group; anything else is left for validation to judge.

    Raises:
        ValueError: one setting is given twice, by its flat name and inside its group; the
            message starts with the variable's name (``POOL_SIZE: ...``).
    """
    nested: dict[str, Any] = {}
    flat: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in GROUPS and _is_group_value(key, value):
            nested[key] = value
        elif key in FLAT_NAMES:
            group, field = FLAT_NAMES[key]
            flat.setdefault(group, {})[field] = value
        else:
            nested[key] = value
    for group, fields in flat.items():
        whole = nested.get(group)
        if isinstance(whole, FrozenSettings):
            whole = {name: getattr(whole, name) for name in whole.model_fields_set}
        elif whole is None:
            whole = {}
        elif not isinstance(whole, Mapping):
            continue  # not a group at all: its own error says so
        twice = sorted(set(whole) & set(fields))
        if twice:
            name = ENV_NAMES[group, twice[0]]
            raise ValueError(f"{name.upper()}: given twice, as {name} and as {group}.{twice[0]}")
        nested[group] = {**whole, **fields}
    return nested
