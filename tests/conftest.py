from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.apps import RunningApp, start_app
from tests.support.postgres import Postgres
from tests.support.recorder import Recorder


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
