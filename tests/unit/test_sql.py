"""The SQL classifier: plain reads, statement kinds and row locks, with keywords hidden in
literals, quoted identifiers, comments and dollar-quoted bodies not counting."""

from __future__ import annotations

import pytest

from asyncdal._sql import (
    STATEMENT_KINDS,
    Classification,
    StatementKind,
    classify,
    locks_rows,
    may_write,
    statement_kind,
)


def found(kind: StatementKind, writes: bool, locks: bool = False) -> Classification:
    return Classification(kind, writes, locks)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Plain reads.
        ("SELECT 1", found("select", False)),
        ("select * from items", found("select", False)),
        ("SeLeCt 1", found("select", False)),
        ("VALUES (1), (2)", found("select", False)),
        ("TABLE items", found("select", False)),
        ("SHOW statement_timeout", found("other", False)),
        ("WITH x AS (SELECT 1) SELECT * FROM x", found("select", False)),
        (
            "with recursive t(n) as (values (1) union all select n + 1 from t) table t",
            found("select", False),
        ),
        # Leading whitespace, parentheses and comments.
        ("  \n\t(SELECT 2)", found("select", False)),
        ("((select 1) union (select 2))", found("select", False)),
        ("-- delete everything\nSELECT 1", found("select", False)),
        ("/* update */ SELECT 1", found("select", False)),
        (
            "/* outer /* nested delete */ still a comment: update */ SELECT 1",
            found("select", False),
        ),
        ("/* outer /* nested */ comment */ DELETE FROM items", found("delete", True)),
        # Commands that write.
        ("INSERT INTO items VALUES (1)", found("insert", True)),
        ("  update items SET id = 1", found("update", True)),
        ("DELETE FROM items", found("delete", True)),
        (
            "MERGE INTO items USING new ON items.id = new.id WHEN MATCHED THEN DELETE",
            found("merge", True),
        ),
        (
            "merge into items i using new n on i.id = n.id "
            "when not matched then insert values (n.id)",
            found("merge", True),
        ),
        ("TRUNCATE items", found("other", True)),
        ("COPY items FROM STDIN", found("other", True)),
        ("COPY items TO STDOUT", found("other", True)),
        ("CALL refresh()", found("other", True)),
        ("CREATE TABLE t (id int)", found("other", True)),
        ("SET LOCAL statement_timeout = 5", found("other", True)),
        ("NOTIFY items", found("other", True)),
        ("BEGIN", found("other", True)),
        ("SELECT * INTO copy FROM items", found("select", True)),
        # Nothing to read: not a plain read.
        ("", found("other", True)),
        ("-- only a comment", found("other", True)),
        (";", found("other", True)),
    ],
)
def test_classification(sql: str, expected: Classification) -> None:
    assert classify(sql) == expected
    assert statement_kind(sql) == expected.kind
    assert may_write(sql) is expected.may_write
    assert locks_rows(sql) is expected.locks_rows


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("WITH d AS (DELETE FROM items RETURNING *) SELECT count(*) FROM d", "delete"),
        ("WITH u AS (UPDATE items SET id = 2 RETURNING id) SELECT * FROM u", "update"),
        ("with i as (insert into items values (1) returning id) select id from i", "insert"),
        (
            "WITH m AS (MERGE INTO items USING n ON true WHEN MATCHED THEN DO NOTHING) SELECT 1",
            "merge",
        ),
        ("WITH x AS (SELECT 1) INSERT INTO items SELECT * FROM x", "insert"),
        ("WITH x AS (SELECT 1) DELETE FROM items WHERE id IN (SELECT * FROM x)", "delete"),
        # The main statement gives the kind; the first data-modifying CTE otherwise.
        ("WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d", "insert"),
        ("WITH d AS (DELETE FROM a RETURNING *), u AS (UPDATE b SET x = 1) SELECT 1", "delete"),
        # After a SEARCH/CYCLE clause (words, not a parenthesis, before the main statement).
        (
            "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t) "
            "CYCLE n SET seen USING path DELETE FROM items WHERE id IN (SELECT n FROM t)",
            "delete",
        ),
        ("(WITH d AS (DELETE FROM items RETURNING *) SELECT * FROM d)", "delete"),
    ],
)
def test_data_modifying_ctes_write(sql: str, kind: StatementKind) -> None:
    assert classify(sql) == found(kind, True)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM items WHERE id = 1 FOR UPDATE",
        "select * from items for no key update skip locked",
        "SELECT * FROM items FOR SHARE NOWAIT",
        "SELECT * FROM items FOR KEY SHARE",
        "SELECT * FROM items FOR UPDATE OF items",
        "SELECT * FROM (SELECT * FROM items FOR UPDATE) AS locked",
        "WITH x AS (SELECT * FROM items) SELECT * FROM x FOR UPDATE",
        "WITH x AS (SELECT * FROM items FOR UPDATE) SELECT * FROM x",
        "SELECT * FROM items\nFOR\n  UPDATE",
        "SELECT * FROM items FOR /* why */ UPDATE",
    ],
)
def test_locking_reads_lock_rows_but_are_reads(sql: str) -> None:
    # A locking read is still a read (the routing session sends it to the primary because it
    # locks; the read-only unit of work lets it run, as before).
    assert classify(sql) == found("select", False, True)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'for update' FROM items",
        "SELECT * FROM items -- FOR UPDATE",
        "SELECT * FROM items /* FOR SHARE */",
        'SELECT * FROM items AS "for" WHERE "update" = 1',
        "SELECT $$ FOR UPDATE $$",
        "SELECT substring('abc' FROM 1 FOR 2)",
        "SELECT * FROM json_table('[]', '$[*]' COLUMNS (n FOR ORDINALITY)) AS j",
    ],
)
def test_lock_words_that_lock_nothing(sql: str) -> None:
    assert classify(sql) == found("select", False, False)


@pytest.mark.parametrize(
    "sql",
    [
        # Literals holding keywords.
        "WITH x AS (SELECT 1) SELECT 'what to do' FROM x",
        "SELECT 'update pending' AS status",
        "WITH x AS (SELECT 1) SELECT 'update pending', 'delete; insert' FROM x",
        "WITH x AS (SELECT 'it''s a delete' AS v) SELECT v FROM x",
        "WITH x AS (SELECT E'it\\'s an update' AS v) SELECT v FROM x",
        "WITH x AS (SELECT e'\\\\' AS v, 'merge' AS w) SELECT v FROM x",
        "WITH x AS (SELECT U&'d\\0061t' AS v, N'insert' AS w) SELECT * FROM x",
        # Quoted identifiers named like keywords.
        'WITH x AS (SELECT 1 AS "update") SELECT "update" FROM x',
        'WITH "delete" AS (SELECT 1) SELECT * FROM "delete"',
        'WITH x AS (SELECT 1 AS "a""insert") SELECT * FROM x',
        # Comments containing keywords.
        "WITH x AS (SELECT 1) -- then delete\nSELECT * FROM x",
        "WITH x AS (SELECT 1 /* update /* nested insert */ merge */) SELECT * FROM x",
        # Dollar-quoted bodies, with and without a tag.
        "WITH x AS (SELECT $$update items$$ AS v) SELECT v FROM x",
        "WITH x AS (SELECT $body$ delete $inner$ $body$ AS v) SELECT v FROM x",
        "WITH x AS (SELECT $a$ $$ insert $$ $a$ AS v) SELECT v FROM x",
        # A literal's quote inside a comment, and a comment opener inside a literal.
        "WITH x AS (SELECT 1) -- it's\nSELECT * FROM x",
        "WITH x AS (SELECT '/* not a comment' AS v) SELECT v FROM x",
        # Identifiers that contain a keyword, and positional parameters.
        "WITH x AS (SELECT updated_at, delete_flag, $1 AS p FROM items) SELECT * FROM x",
    ],
)
def test_keywords_in_literals_identifiers_and_comments_do_not_count(sql: str) -> None:
    assert classify(sql) == found("select", False)


def test_a_keyword_after_a_literal_or_comment_still_counts() -> None:
    assert classify("WITH x AS (SELECT 'a') DELETE FROM items") == found("delete", True)
    assert classify("WITH x AS (SELECT E'\\'') DELETE FROM items") == found("delete", True)
    assert classify("WITH x AS (SELECT $t$ ' $t$) DELETE FROM items") == found("delete", True)
    assert classify('WITH x AS (SELECT 1 AS "a\'") DELETE FROM items') == found("delete", True)
    assert classify("/* a */ WITH x AS (SELECT 1) /* b */ DELETE FROM x") == found("delete", True)
    # A dollar tag is case-sensitive: $A$ does not close $a$.
    assert may_write("SELECT $a$ $A$ $a$; DELETE FROM items") is True


@pytest.mark.parametrize(
    "sql",
    [
        "DO $$ BEGIN UPDATE items SET id = 1; END $$",
        "do $body$ begin perform 1; end $body$",
        "DO LANGUAGE plpgsql $$ BEGIN NULL; END $$",
        "DO 'BEGIN NULL; END'",
    ],
)
def test_do_blocks_may_write(sql: str) -> None:
    assert classify(sql) == found("other", True)


def test_functions_that_write_cannot_be_seen() -> None:
    # Documented limit: only the server can tell (READ ONLY connections make it refuse).
    assert classify("SELECT nextval('s')") == found("select", False)
    assert classify("SELECT pg_advisory_lock(1)") == found("select", False)


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("EXPLAIN INSERT INTO items VALUES (1)", False),
        ("EXPLAIN VERBOSE DELETE FROM items", False),
        ("EXPLAIN (FORMAT JSON) UPDATE items SET id = 1", False),
        ("EXPLAIN (ANALYZE false) INSERT INTO items VALUES (1)", False),
        ("EXPLAIN (ANALYZE OFF, BUFFERS) INSERT INTO items VALUES (1)", False),
        ("EXPLAIN ANALYZE SELECT * FROM items", False),
        ("EXPLAIN ANALYZE INSERT INTO items VALUES (1)", True),
        ("explain analyse verbose delete from items", True),
        ("EXPLAIN VERBOSE ANALYZE DELETE FROM items", True),
        ("EXPLAIN (ANALYZE) INSERT INTO items VALUES (1)", True),
        (
            "EXPLAIN (ANALYZE true, FORMAT JSON) "
            "MERGE INTO items USING n ON true WHEN MATCHED THEN DELETE",
            True,
        ),
        (
            "EXPLAIN (BUFFERS, ANALYZE) WITH d AS (DELETE FROM items RETURNING *) SELECT * FROM d",
            True,
        ),
        ("EXPLAIN ANALYZE WITH x AS (SELECT 1) SELECT 'delete' FROM x", False),
        ("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", True),
        ("EXPLAIN ANALYZE EXECUTE prepared_statement", True),
        ("EXPLAIN", False),
    ],
)
def test_explain_writes_only_when_it_analyzes_a_write(sql: str, writes: bool) -> None:
    assert classify(sql) == found("other", writes)


def test_explain_analyze_of_a_locking_read_locks() -> None:
    assert locks_rows("EXPLAIN ANALYZE SELECT * FROM items FOR UPDATE") is True
    assert locks_rows("EXPLAIN SELECT * FROM items FOR UPDATE") is False


def test_several_statements() -> None:
    assert classify("SELECT 1;") == found("select", False)
    assert classify("SELECT 1; SELECT 2;;") == found("select", False)
    assert classify("SELECT 1; DELETE FROM items") == found("other", True)
    assert classify("SELECT 'a;b'; SELECT 2") == found("select", False)
    assert classify("SELECT 1 FOR UPDATE; SELECT 2") == found("select", False, True)
    assert classify("EXPLAIN SELECT 1; DELETE FROM items") == found("other", True)


def test_a_select_with_a_column_named_like_a_command_is_a_read() -> None:
    # update, delete, insert and merge are unreserved keywords: usable as column names. In a
    # SELECT they cannot be commands; in a WITH they are taken for one (the safe side).
    assert classify("SELECT update, delete FROM t") == found("select", False)
    assert classify("WITH x AS (SELECT update FROM t) SELECT * FROM x").may_write is True


def test_unterminated_literals_run_to_the_end() -> None:
    # The server refuses these; what matters is that nothing inside counts as a keyword.
    assert classify("WITH x AS (SELECT 1) SELECT 'delete") == found("select", False)
    assert classify("WITH x AS (SELECT 1) SELECT $$delete") == found("select", False)
    assert classify("WITH x AS (SELECT 1) SELECT /* delete") == found("select", False)
    assert classify('WITH x AS (SELECT 1) SELECT "delete') == found("select", False)


def test_kinds_are_a_closed_set() -> None:
    assert STATEMENT_KINDS == ("select", "insert", "update", "delete", "merge", "other")
    samples = ["SELECT 1", "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t"]
    samples += ["MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "VACUUM", "EXPLAIN 1"]
    assert {statement_kind(sql) for sql in samples} == set(STATEMENT_KINDS)
