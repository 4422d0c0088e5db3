"""Unit tests: fast, no network, no subprocesses. Settings never leak in from the environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_otel_perf_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("OTEL_PERF_"):
            monkeypatch.delenv(name)
