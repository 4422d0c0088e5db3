"""Environments other than the test venv, built as users build theirs: otel-perf installed from this
tree with `pip install .` (not editable: the way the README installs it), optionally followed by
`opentelemetry-bootstrap -a install`, which every OpenTelemetry Python guide tells users to run.

Created once under the repository (`.venv-<name>`, git-ignored), refreshed with the current tree's
otel-perf at the start of each test session; pip's cache makes both quick after the first time.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What the test apps need besides otel-perf and its test extra.
APP_EXTRAS = ("aiosqlite", "asyncpg")
# `opentelemetry-bootstrap` installs each instrumentation at the installed instrumentation release;
# the registry here serves the whole 0.66b1 line but not 0.66b2's sqlite3, urllib3, starlette, …
BOOTSTRAP_FAMILY = ("opentelemetry-sdk==1.45.1", "opentelemetry-instrumentation==0.66b1")
# The instrumentations the tests rely on bootstrap to add (it exits 0 even when an install fails).
BOOTSTRAPPED = ("sqlite3", "dbapi", "psycopg", "asyncpg", "urllib3")

_refreshed: set[str] = set()


def _run(*argv: str | Path) -> None:
    result = subprocess.run([str(part) for part in argv], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        command = " ".join(map(str, argv))
        raise RuntimeError(f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def user_venv(name: str, *, bootstrap: bool = False, core: bool = False) -> Path:
    """The `bin` directory of `.venv-<name>`: otel-perf installed from this tree as `pip install .`
    does, with the app extras (`core`: the core alone, no extra at all), and after
    `opentelemetry-bootstrap -a install` if `bootstrap`."""
    root = REPO / f".venv-{name}"
    python = root / "bin" / "python"
    with open(REPO / f".venv-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = root / ".otel-perf-ready"
        if not marker.exists():
            _run(sys.executable, "-m", "venv", "--clear", root)
            _run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
            family = BOOTSTRAP_FAMILY if bootstrap else ()
            wanted = [str(REPO)] if core else [f"{REPO}[test]", *APP_EXTRAS, *family]
            _run(python, "-m", "pip", "install", "--quiet", *wanted)
            if bootstrap:
                _run(root / "bin" / "opentelemetry-bootstrap", "-a", "install")
                modules = ", ".join(f"opentelemetry.instrumentation.{name}" for name in BOOTSTRAPPED)
                _run(python, "-c", f"import {modules}")
            marker.write_text("ready\n")
        elif name not in _refreshed:
            # This session's code, not the code of the session that built the environment.
            _run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(REPO))
            # … and any dependency it declares since (the environment may predate it).
            _run(python, "-m", "pip", "install", "--quiet", str(REPO) if core else f"{REPO}[test]")
        _refreshed.add(name)
    return root / "bin"
