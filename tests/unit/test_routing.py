"""Routing logic without a server: WAL positions, weighted rotation, health and positions."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from sqlalchemy import column, delete, insert, select, table, text, update

from asyncdal.replicas._lsn import format_lsn, parse_lsn, read_your_writes, required_lsn
from asyncdal.replicas._routing import ReplicaNode, Router, is_write, route

items = table("items", column("id"))


def node(name: str, weight: int = 1, lsn: int | None = 100) -> ReplicaNode:
    return ReplicaNode(name=name, weight=weight, engines={}, replay_lsn=lsn)


def router(*nodes: ReplicaNode) -> Router:
    return Router("main", {}, list(nodes))


def picks(chooser: Router, count: int, required: int | None = None) -> list[str | None]:
    chosen = [chooser.pick(required, frozenset()) for _ in range(count)]
    return [None if choice is None else choice.name for choice in chosen]


def test_lsn_round_trip_and_order() -> None:
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")


@pytest.mark.parametrize("bad", ["", "yesterday", "0-1", "1/2/3", "123456789/0", "0/ 1"])
def test_bad_lsn_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a WAL position"):
        parse_lsn(bad)


def test_weighted_round_robin() -> None:
    counts = collections.Counter(picks(router(node("a", 3), node("b", 1)), 400))
    assert counts == {"a": 300, "b": 100}


def test_unhealthy_and_excluded_nodes_are_skipped_and_none_means_primary() -> None:
    a, b = node("a"), node("b")
    chooser = router(a, b)
    a.mark_down("ConnectionRefusedError")
    assert set(picks(chooser, 10)) == {"b"}
    assert chooser.pick(None, frozenset({b})) is None
    b.mark_down("lag 40.0s > 30s")
    assert set(picks(chooser, 4)) == {None}
    assert router().pick(None, frozenset()) is None


def test_required_position_picks_a_node_that_has_it_else_the_primary() -> None:
    behind, ahead, unknown = node("behind", lsn=50), node("ahead", lsn=200), node("x", lsn=None)
    chooser = router(behind, ahead, unknown)
    assert set(picks(chooser, 6, required=150)) == {"ahead"}
    assert set(picks(chooser, 3, required=500)) == {None}


def test_statements_that_must_go_to_the_primary() -> None:
    writes: list[Any] = [
        insert(items),
        update(items).values(id=1),
        delete(items),
        select(items).with_for_update(),
        text("UPDATE items SET id = 1"),
        text("WITH x AS (DELETE FROM items RETURNING *) SELECT * FROM x"),
        text("CALL refresh()"),
        text("SELECT * FROM items WHERE id = 1 FOR UPDATE"),
        text("select * from items for no key update skip locked"),
        text("WITH x AS (SELECT 1) SELECT * FROM items FOR SHARE"),
        text("DO $$ BEGIN NULL; END $$"),
        # .columns() makes a TextualSelect, which SQLAlchemy counts as a SELECT.
        text("DELETE FROM items RETURNING id").columns(column("id")),
    ]
    reads: list[Any] = [
        select(items),
        text("SELECT 1"),
        text("  (SELECT 2)"),
        text("SHOW x"),
        text("WITH x AS (SELECT 1) SELECT 'what to do' FROM x"),
        text("SELECT 'update pending', 'for update'"),
        text("SELECT id FROM items").columns(column("id")),
        None,
    ]
    assert [is_write(statement) for statement in writes] == [True] * len(writes)
    assert [is_write(statement) for statement in reads] == [False] * len(reads)


def test_overrides_nest_and_are_per_database() -> None:
    chooser = router(node("a"))
    assert chooser.mode() is None
    with route("main", "primary"):
        assert chooser.mode() == "primary"
        with route("main", "replicas"):
            assert chooser.mode() == "replicas"
        with route("reference", "replicas"):
            assert chooser.mode() == "primary"
        assert chooser.mode() == "primary"
    assert chooser.mode() is None


def test_read_your_writes_is_per_database() -> None:
    with read_your_writes("0/100"):
        assert required_lsn("main") == 0x100
        assert required_lsn("reference") is None
        with read_your_writes(0x200, database="reference"):
            assert required_lsn("reference") == 0x200
    assert required_lsn("main") is None
    with read_your_writes(None):
        assert required_lsn("main") is None


def test_lag_is_measured_against_the_primary_positions_read() -> None:
    import time

    from asyncdal.replicas._monitor import ReplicaMonitor

    monitor = ReplicaMonitor("main", [], interval=1.0, max_lag=30.0)
    # No position of the primary read yet: nothing to be behind.
    assert monitor._lag(0x100) == 0.0
    now = time.monotonic()
    monitor._positions.extend([(now - 10.0, 0x100), (now - 4.0, 0x200), (now - 1.0, 0x300)])
    # Replayed the latest position: no lag, however old its last transaction.
    assert monitor._lag(0x300) == 0.0
    # Between two positions: behind by more than the time since the later one was read, less
    # than since the earlier one, in proportion to the WAL in between.
    assert 2.4 <= monitor._lag(0x280) < 2.6
    assert 1.0 <= monitor._lag(0x2FF) < 1.1
    assert 4.0 <= monitor._lag(0x200) < 4.1
    # Behind the oldest kept (a replica whose stream broke): at least that far.
    assert monitor._lag(0x50) >= 10.0
    assert monitor._lag(None) >= 10.0
