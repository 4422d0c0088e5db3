from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import RunningStack, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stack.down()


@pytest.fixture
def fresh_stack(tmp_path: Path) -> Iterator:
    """start(analyzers=…) → a stack of the test's own (for tests that stop or scale parts)."""
    started: list[RunningStack] = []

    def start(**kwargs) -> RunningStack:
        running = start_stack(tmp_path / f"stack{len(started)}", **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stack.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
