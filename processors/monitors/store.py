"""Where windows and monitor state live: SQLite, shared by every process that points at the file.

Each writer (a process: a uvicorn worker, an analyzer replica on the same volume, a restart) saves
its part of an open window under its own id. When a window closes, the first writer to seal it
merges every part into one row and is the one that evaluates it: so two workers see the whole
traffic, and raise one alert, not two. A restart finds its baselines, and open regressions, here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from otel_perf.processors.monitors.base import State
from otel_perf.processors.monitors.windows import Aggregate, SeriesKey
from otel_perf.processors.statefile import MEMORY, open_state

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    series TEXT NOT NULL, start_ns INTEGER NOT NULL, writer TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (series, start_ns, writer));
CREATE TABLE IF NOT EXISTS windows (
    series TEXT NOT NULL, start_ns INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (series, start_ns));
CREATE TABLE IF NOT EXISTS state (
    monitor TEXT NOT NULL, series TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (monitor, series));
"""


class WindowStore:
    """The windows of every series, and each monitor's state per series. Thread-safe."""

    def __init__(self, path: str | Path = MEMORY, *, setting: str = "") -> None:
        """`setting`: the variable that named `path` (its directory must exist then; see
        `open_state`)."""
        self.path = str(path) or MEMORY
        self._lock = threading.Lock()
        self._db = self._connect(setting)

    def _connect(self, setting: str) -> sqlite3.Connection:
        db, self.path = open_state(
            self.path, _SCHEMA, "a restart starts the trend baselines afresh", setting=setting
        )
        return db

    @property
    def persistent(self) -> bool:
        return self.path != MEMORY

    def save_part(self, key: SeriesKey, start_ns: int, writer: str, aggregate: Aggregate) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?)",
                (key.encode(), start_ns, writer, aggregate.dumps()),
            )

    def seal(self, key: SeriesKey, start_ns: int) -> tuple[Aggregate | None, bool]:
        """The window merged from every writer's part, and whether this call sealed it (so evaluates
        it); (the sealed window, False) when another writer was first; (None, False) if none.
        Parts saved after the window was sealed (a writer that was late) are merged into it then."""
        series = key.encode()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT data FROM windows WHERE series = ? AND start_ns = ?", (series, start_ns)
                ).fetchone()
                parts = [
                    Aggregate.loads(data)
                    for (data,) in db.execute(
                        "SELECT data FROM parts WHERE series = ? AND start_ns = ?", (series, start_ns)
                    )
                ]
                if row is None and not parts:
                    db.execute("COMMIT")
                    return None, False
                merged = Aggregate.loads(row[0]) if row is not None else parts.pop(0)
                for part in parts:
                    merged.merge(part)
                db.execute(
                    "INSERT OR REPLACE INTO windows VALUES (?, ?, ?)", (series, start_ns, merged.dumps())
                )
                db.execute("DELETE FROM parts WHERE series = ? AND start_ns = ?", (series, start_ns))
                db.execute("COMMIT")
                return merged, row is None
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def unsealed(self, before_ns: int) -> list[tuple[SeriesKey, int]]:
        """Windows with parts but no seal that started before `before_ns`: left by a process that
        stopped (or died) before they closed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT series, start_ns FROM parts WHERE start_ns < ?", (before_ns,)
            ).fetchall()
        return [(SeriesKey.decode(series), start_ns) for series, start_ns in rows]

    def windows(self, key: SeriesKey, since_ns: int) -> list[tuple[int, Aggregate]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT start_ns, data FROM windows WHERE series = ? AND start_ns >= ? ORDER BY start_ns",
                (key.encode(), since_ns),
            ).fetchall()
        return [(start_ns, Aggregate.loads(data)) for start_ns, data in rows]

    def state(self, monitor: str, key: SeriesKey) -> State | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM state WHERE monitor = ? AND series = ?", (monitor, key.encode())
            ).fetchone()
        return json.loads(row[0]) if row else None

    def save_state(self, monitor: str, key: SeriesKey, state: State | None) -> None:
        with self._lock:
            if state is None:
                self._db.execute(
                    "DELETE FROM state WHERE monitor = ? AND series = ?", (monitor, key.encode())
                )
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO state VALUES (?, ?, ?)",
                    (monitor, key.encode(), json.dumps(state)),
                )

    def prune(self, before_ns: int) -> None:
        """Forget windows (and abandoned parts) older than the history kept."""
        with self._lock:
            self._db.execute("DELETE FROM windows WHERE start_ns < ?", (before_ns,))
            self._db.execute("DELETE FROM parts WHERE start_ns < ?", (before_ns,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
