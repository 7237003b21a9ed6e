"""The journal's multi-row inserts (hub/journal/store.py ``insert_rows``): every row written exactly
once whatever the count (full chunks, then power-of-two remainders), upserts included."""

from __future__ import annotations

import sqlite3

import pytest

from hub.journal import INSERT_CHUNK, insert_rows


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, INSERT_CHUNK - 1, INSERT_CHUNK,
                                   INSERT_CHUNK + 1, 1000, 2 * INSERT_CHUNK + 129])
def test_every_row_once(count: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB)")
    rows = [(i, f"v{i}", bytes([i % 256])) for i in range(count)]
    insert_rows(conn, "INSERT INTO t", rows)
    assert conn.execute("SELECT k, v, b FROM t ORDER BY k").fetchall() == rows


def test_upsert_tail_applies_to_every_row() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    insert_rows(conn, "INSERT INTO t", [(f"k{i}", i) for i in range(300)])
    insert_rows(conn, "INSERT INTO t", [(f"k{i}", 1000) for i in range(0, 300, 2)],
                " ON CONFLICT(k) DO UPDATE SET n=MAX(n, excluded.n)")
    got = dict(conn.execute("SELECT k, n FROM t").fetchall())
    assert got == {f"k{i}": 1000 if i % 2 == 0 else i for i in range(300)}


def test_or_ignore_keeps_the_first() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    insert_rows(conn, "INSERT INTO t", [("a", 1)])
    insert_rows(conn, "INSERT OR IGNORE INTO t", [("a", 2), ("b", 3)])
    assert dict(conn.execute("SELECT k, n FROM t").fetchall()) == {"a": 1, "b": 3}
