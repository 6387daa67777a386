"""The one private SQLAlchemy attribute the routing session reads on a SELECT:
``_for_update_arg`` (through ``select_locks_rows``). Fails loudly when SQLAlchemy changes
shape, rather than letting locking reads silently go to a replica."""

from __future__ import annotations

from sqlalchemy import column, select, table, union_all
from sqlalchemy.sql.selectable import GenerativeSelect

from asyncdal.engine._sqlalchemy import select_locks_rows

items = table("items", column("id"))


def test_the_attribute_exists_where_it_is_read() -> None:
    assert "_for_update_arg" in vars(GenerativeSelect), (
        "SQLAlchemy no longer keeps with_for_update() in GenerativeSelect._for_update_arg: "
        "update asyncdal.engine._sqlalchemy.select_locks_rows"
    )
    assert select(items)._for_update_arg is None
    assert select(items).with_for_update()._for_update_arg is not None


def test_locking_selects_are_told_from_plain_ones() -> None:
    assert select_locks_rows(select(items)) is False
    assert select_locks_rows(select(items).with_for_update()) is True
    assert select_locks_rows(select(items).with_for_update(read=True)) is True
    assert select_locks_rows(select(items).with_for_update(key_share=True, skip_locked=True))
    assert select_locks_rows(select(items).with_for_update(nowait=True, of=items)) is True
    assert select_locks_rows(union_all(select(items), select(items)).with_for_update())
