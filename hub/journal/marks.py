"""What the hub remembers per sensor and device beside the events: the highest ``seq`` per
(site, device, sensor), the loss detector's state per device (hub/loss_detector.py) and the
identities admitted so far (hub/identity_limits.py). Written inside an ingest batch's
transaction, so what the hub holds and what it reported never disagree; read back once at
start."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from hub.journal.store import insert_rows

__all__ = ["insert_identities", "insert_loss_state", "insert_seq_marks", "load_identities",
           "load_loss_state", "load_seq_marks"]


def load_seq_marks(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    return {(site, d, s): q for site, d, s, q in conn.execute(
        "SELECT site, device, sensor, seq FROM seq_marks")}


def load_identities(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The identities admitted so far, (site, device, sensor or "")."""
    return [(site, device, sensor) for site, device, sensor in conn.execute(
        "SELECT site, device, sensor FROM identities")]


def load_loss_state(conn: sqlite3.Connection) -> dict[str, Any]:
    """The loss detector's state as stored, ``site/device`` -> state."""
    rows = conn.execute("SELECT device, state FROM loss_state").fetchall()
    return {device: json.loads(state) for device, state in rows}


def insert_loss_state(conn: sqlite3.Connection, loss_state: Mapping[str, Any] | None) -> None:
    """The state of the devices the detector changed (inside the caller's transaction)."""
    if loss_state:
        insert_rows(
            conn, "INSERT INTO loss_state",
            [(k, json.dumps(v, separators=(",", ":"))) for k, v in loss_state.items()],
            " ON CONFLICT(device) DO UPDATE SET state=excluded.state")


def insert_identities(conn: sqlite3.Connection,
                      identities: Sequence[tuple[str, str, str]]) -> None:
    insert_rows(conn, "INSERT OR IGNORE INTO identities", identities)


def insert_seq_marks(conn: sqlite3.Connection,
                     seq_marks: Mapping[tuple[str, str, str], int]) -> None:
    """Raise each (site, device, sensor)'s mark to ``seq`` (never lowers it)."""
    if seq_marks:
        insert_rows(conn, "INSERT INTO seq_marks",
                    [(site, d, s, q) for (site, d, s), q in seq_marks.items()],
                    " ON CONFLICT(site, device, sensor) DO UPDATE SET "
                    "seq=MAX(seq, excluded.seq)")
