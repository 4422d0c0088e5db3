"""State files: SQLite shared by the processes of a host (uvicorn workers, a restart, replicas on
one volume), or memory when there is none. One way to open them, for every kind of state."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

logger = logging.getLogger("otel_perf.state")

MEMORY = ":memory:"


def open_state(path: str, schema: str, losing: str, *, setting: str = "") -> tuple[sqlite3.Connection, str]:
    """(connection, the path in use): the file in WAL mode with `schema` applied, or, when it can't
    be opened, memory, with one warning saying what that loses (`losing`: "a restart starts the
    baselines afresh"). The connection is shared by the caller's threads under its own lock.

    `setting`: the variable the path came from. Such a path is the user's: its directory must
    exist (a typo creates nothing; the warning names the variable). Without one, the path is our
    default under $XDG_STATE_HOME, and its directory is created."""
    if path and path != MEMORY:
        parent = Path(path).parent
        named = f"{setting}={path}" if setting else path
        try:
            if not setting:
                parent.mkdir(parents=True, exist_ok=True)
            elif not parent.is_dir():
                raise FileNotFoundError(f"its directory {parent} does not exist: create it or fix the path")
            db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; no fsync per write
            db.executescript(schema)
            return db, path
        except (OSError, sqlite3.Error) as error:
            logger.warning(
                "otel-perf: can't keep state in %s (%s); keeping it in memory, so %s", named, error, losing
            )
    db = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
    db.executescript(schema)
    return db, MEMORY
