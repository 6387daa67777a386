"""Upsert on a named unique constraint: ``INSERT ... ON CONFLICT ON CONSTRAINT ... DO UPDATE``.

The rows are checked before SQL is made (the same checks the in-memory fake makes): known
columns only, every column of the constraint given and not NULL (NULL never conflicts, so it
would always insert), no two rows with the same key (PostgreSQL refuses to update one row twice
in one statement). On conflict the named columns are updated (by default every given column
outside the constraint and the primary key), the version column is bumped, and the columns
with an ``onupdate`` get it; with nothing to update the stored row is returned as it is.

Example:
    >>> plan = plan_upsert(Author, [{"email": "a@x", "name": "A"}], "uq_authors_email", None)
    >>> statement = upsert_statement(Author, plan)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, PrimaryKeyConstraint, UniqueConstraint, inspect
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.sql.schema import Column

from asyncdal.errors import InvalidQueryError
from asyncdal.orm._versions import next_version, version_attribute

__all__ = [
    "UpsertPlan",
    "constraint_columns",
    "constraint_name",
    "onupdate_value",
    "plan_upsert",
    "upsert_statement",
]


@dataclass(frozen=True, slots=True)
class UpsertPlan:
    """Checked upsert input.

    Attributes:
        constraint: the constraint's name.
        key: the attribute names of the constraint's columns.
        update: the attribute names updated on conflict.
        rows: the values of each row, by attribute name (the version column's first value
            filled in).
    """

    constraint: str
    key: tuple[str, ...]
    update: tuple[str, ...]
    rows: list[dict[str, Any]]

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of the constraint's columns in ``row``."""
        return tuple(row[name] for name in self.key)


def _attribute(model: type[Any], column: Column[Any]) -> str:
    return str(inspect(model).get_property_by_column(column).key)


def constraint_name(constraint: UniqueConstraint | PrimaryKeyConstraint) -> str:
    """The constraint's name, or the one PostgreSQL gives an unnamed one (``posts_pkey``,
    ``posts_slug_key``)."""
    if constraint.name:
        return str(constraint.name)
    table = constraint.table.name
    if isinstance(constraint, PrimaryKeyConstraint):
        return f"{table}_pkey"
    return f"{table}_{'_'.join(column.name for column in constraint.columns)}_key"


def constraint_columns(model: type[Any], constraint: str) -> tuple[str, ...]:
    """The attribute names of the columns of the unique (or primary key) constraint named
    ``constraint``.

    Raises:
        ValueError: the table has no unique or primary key constraint of that name (a unique
            index will not do: ``ON CONFLICT ON CONSTRAINT`` takes constraints only).
    """
    table = inspect(model).local_table
    names = []
    for candidate in table.constraints:
        if isinstance(candidate, UniqueConstraint | PrimaryKeyConstraint):
            name = constraint_name(candidate)
            names.append(name)
            if name == constraint:
                return tuple(_attribute(model, column) for column in candidate.columns)
    raise ValueError(
        f"{table.name} has no unique constraint {constraint!r}; it has: "
        f"{', '.join(sorted(names)) or 'none'}"
    )


def plan_upsert(
    model: type[Any],
    rows: Sequence[Mapping[str, Any]],
    constraint: str,
    update: Iterable[str] | None,
) -> UpsertPlan:
    """Check the rows of an upsert and decide what a conflict updates.

    Raises:
        InvalidQueryError: an unknown column, a missing or NULL key column, two rows with the
            same key, rows that name different columns, or a value for the version column.
        ValueError: no such constraint, or ``update`` names an unknown column.
    """
    key = constraint_columns(model, constraint)
    columns = set(inspect(model).columns.keys())
    version = version_attribute(model)
    given: set[str] | None = None
    seen: dict[tuple[Any, ...], int] = {}
    checked = []
    for index, row in enumerate(rows):
        unknown = set(row) - columns
        if unknown:
            raise InvalidQueryError(f"unknown columns: {sorted(unknown)}")
        if version is not None and version in row:
            raise InvalidQueryError(f"{version}: the version column is set by the repository")
        if given is not None and set(row) != given:
            raise InvalidQueryError("every row of an upsert must name the same columns")
        given = set(row)
        missing = [name for name in key if row.get(name) is None]
        if missing:
            raise InvalidQueryError(
                f"upsert on {constraint} needs a value for {', '.join(missing)} in every row "
                "(NULL never conflicts)"
            )
        row_key = tuple(row[name] for name in key)
        if row_key in seen:
            raise InvalidQueryError(
                f"rows {seen[row_key]} and {index} have the same {', '.join(key)}: an upsert "
                "can write each row once"
            )
        seen[row_key] = index
        values = dict(row)
        if version is not None and next_version(model, None) is not None:
            values[version] = next_version(model, None)
        checked.append(values)
    primary_key = {_attribute(model, column) for column in inspect(model).primary_key}
    if update is None:
        chosen = tuple(sorted((given or set()) - set(key) - primary_key))
    else:
        chosen = tuple(update)
        unknown = set(chosen) - columns
        if unknown:
            raise ValueError(f"update= names unknown columns: {sorted(unknown)}")
    return UpsertPlan(constraint, key, chosen, checked)


def onupdate_value(column: Column[Any]) -> Any:
    """What a column's ``onupdate`` gives: its SQL expression, its scalar, or what its
    callable returns (called without an execution context)."""
    default: Any = column.onupdate
    if default.is_clause_element or default.is_scalar:
        return default.arg
    return default.arg(None)


def upsert_statement(model: type[Any], plan: UpsertPlan) -> Insert:
    """``INSERT ... ON CONFLICT ON CONSTRAINT ... DO UPDATE ... RETURNING`` for ``plan``."""
    mapper = inspect(model)
    statement = insert(model).values(plan.rows)
    assignments: dict[Any, Any] = {
        mapper.columns[name]: statement.excluded[mapper.columns[name].name] for name in plan.update
    }
    version = version_attribute(model)
    if assignments:
        for name, column in mapper.columns.items():
            if column.onupdate is not None and name not in plan.update and name != version:
                assignments[column] = onupdate_value(column)
        if version is not None:
            column = mapper.columns[version]
            if isinstance(column.type, Integer):
                assignments[column] = column + 1
            elif next_version(model, None) is not None:
                assignments[column] = next_version(model, None)
    else:
        # Nothing to update: set a key column to itself, so RETURNING gives the stored row.
        column = mapper.columns[plan.key[0]]
        assignments[column] = column
    return statement.on_conflict_do_update(constraint=plan.constraint, set_=assignments)
