"""The outbox between the router and the sinks: every alert reaches every sink at least once, and
once per key.

An alert the router decides to send is written once per sink (SQLite) under an idempotency key:
its fingerprint and the cooldown window it fired in, so a restarted process raising the same finding
again in that window writes nothing new. Each sink's worker claims its due rows for a lease,
delivers them and marks them delivered; a failure is retried with backoff (1 s, doubling to 60 s)
for `retry_for_s`, then dropped and counted. A process killed mid-delivery leaves its claimed rows
to the next process on the same file once the lease ends; two workers of one service share the
file and never deliver a row twice. Pending rows are bounded in bytes: beyond, new alerts are
dropped, counted and logged. Hand-written: no maintained Python library is a small embedded,
multi-process outbox.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from otel_perf.processors.statefile import MEMORY, open_state

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    record TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0,
    delivered_at REAL,
    UNIQUE (sink, key));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, delivered_at, next_at);
"""
_MAX_BACKOFF_S = 60.0


class Outbox:
    """Thread-safe; one connection per process (re-opened in a forked child by the router)."""

    def __init__(
        self,
        path: str | Path = MEMORY,
        *,
        max_pending_bytes: int = 64 * 1024 * 1024,
        retry_for_s: float = 86_400,
        keep_delivered_s: float = 86_400,
        clock: Callable[[], float] = time.time,
        setting: str = "",
    ) -> None:
        """`setting`: the variable that named `path` (its directory must exist then, see
        `open_state`); none for our default path, whose directory is created."""
        self.path = str(path) or MEMORY
        self._setting = setting
        self.max_pending_bytes = max_pending_bytes
        self.retry_for_s = retry_for_s
        self.keep_delivered_s = keep_delivered_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = self._connect()
        self._next_prune = 0.0

    def _connect(self) -> sqlite3.Connection:
        losing = "alerts not yet delivered are lost if the process stops"
        db, self.path = open_state(self.path, _SCHEMA, losing, setting=self._setting)
        return db

    def reopen(self) -> None:
        """A new connection (in a forked child: SQLite connections don't survive fork)."""
        self._lock = threading.Lock()
        self._db = self._connect()

    def put(self, sinks: Sequence[str], key: str, record: dict[str, Any]) -> bool | None:
        """Queue `record` for each sink under `key`. True: queued; None: already there (a duplicate);
        False: no room (the byte bound)."""
        text = json.dumps(record, separators=(",", ":"), default=str)
        size = len(text.encode())
        now = self._clock()
        with self._lock:
            (pending,) = self._db.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM outbox WHERE delivered_at IS NULL"
            ).fetchone()
            if pending + size * len(sinks) > self.max_pending_bytes:
                return False
            written = 0
            for sink in sinks:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (sink, key, record, bytes, created_at, next_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (sink, key, text, size, now, now),
                )
                written += cursor.rowcount
        return True if written else None

    def claim(self, sink: str, lease_s: float, limit: int = 16) -> list[tuple[int, dict[str, Any], int]]:
        """(row id, record, attempts so far) of `sink`'s due rows, leased to the caller."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT id, record, attempts FROM outbox WHERE sink = ? AND delivered_at IS NULL "
                    "AND next_at <= ? AND claimed_until <= ? ORDER BY id LIMIT ?",
                    (sink, now, now, limit),
                ).fetchall()
                self._db.executemany(
                    "UPDATE outbox SET claimed_until = ? WHERE id = ?",
                    [(now + lease_s, row[0]) for row in rows],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [(row_id, json.loads(record), attempts) for row_id, record, attempts in rows]

    def delivered(self, row_id: int) -> None:
        now = self._clock()
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered_at = ?, claimed_until = 0 WHERE id = ?", (now, row_id)
            )
            if now >= self._next_prune:
                self._next_prune = now + 60
                # Delivered long ago, or owed to a place no process delivers to any more (an app
                # since moved its alerts file): neither may grow the file or fill the byte bound.
                self._db.execute(
                    "DELETE FROM outbox WHERE (delivered_at IS NOT NULL AND delivered_at < ?) "
                    "OR (delivered_at IS NULL AND created_at < ?)",
                    (now - self.keep_delivered_s, now - self.retry_for_s),
                )

    def failed(self, row_id: int, attempts: int) -> bool:
        """Schedule a retry with backoff; False when the row is older than `retry_for_s` and was
        dropped instead."""
        now = self._clock()
        with self._lock:
            row = self._db.execute("SELECT created_at FROM outbox WHERE id = ?", (row_id,)).fetchone()
            if row is None:
                return False
            if now - row[0] > self.retry_for_s:
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                return False
            backoff = min(_MAX_BACKOFF_S, 2.0**attempts)
            self._db.execute(
                "UPDATE outbox SET attempts = ?, next_at = ?, claimed_until = 0 WHERE id = ?",
                (attempts + 1, now + backoff, row_id),
            )
            return True

    def next_due(self, sink: str) -> float | None:
        """When `sink`'s next undelivered row is due (its lease end, if claimed), or None."""
        with self._lock:
            (due,) = self._db.execute(
                "SELECT MIN(MAX(next_at, claimed_until)) FROM outbox WHERE sink = ? AND delivered_at IS NULL",
                (sink,),
            ).fetchone()
        return float(due) if due is not None else None

    def undelivered(self, sinks: Sequence[str], *, first_attempt_only: bool = False) -> int:
        """Rows of these sinks not delivered yet (only those never tried, with `first_attempt_only`)."""
        marks = ",".join("?" * len(sinks))
        query = f"SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND sink IN ({marks})"
        if first_attempt_only:
            query += " AND attempts = 0"
        with self._lock:
            (count,) = self._db.execute(query, tuple(sinks)).fetchone()
        return int(count)

    def close(self) -> None:
        with self._lock:
            self._db.close()
