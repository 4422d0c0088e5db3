from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.apps import RunningApp, start_app
from tests.support.postgres import Postgres
from tests.support.recorder import Recorder

# The monitors keep their windows under $XDG_STATE_HOME by default: never the tester's own (apps the
# tests start inherit it). Tests of persistence name their own file.
os.environ["XDG_STATE_HOME"] = _STATE_HOME = tempfile.mkdtemp(prefix="otel-perf-test-state-")
atexit.register(shutil.rmtree, _STATE_HOME, ignore_errors=True)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres.start()
    yield server
    server.stop()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator:
    """launch(mode, **kwargs) → a RunningApp, stopped after the test."""
    started: list[RunningApp] = []

    def _launch(mode: str = "instrument", workdir: Path | None = None, **kwargs) -> RunningApp:
        app = start_app(workdir or tmp_path / f"app{len(started)}", mode, **kwargs)
        started.append(app)
        return app

    yield _launch
    for app in started:
        app.stop()
