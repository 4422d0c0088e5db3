"""Never hurt the host app: a FastAPI app that uses SQLAlchemy every common way (tests/apps/sqla_styles.py,
sync and async, SQLite and PostgreSQL through psycopg and asyncpg) answers every request exactly as it
does where otel-perf is not installed, under every launch mode, enabled or switched off; switched off,
otel-perf hooks into none of its SQLAlchemy objects and logs nothing.

The reference run uses a separate environment with the app's dependencies at the versions of this
one and neither otel-perf nor OpenTelemetry's SDK or instrumentations (`.venv-bare`, built once and
reused while the versions match). Only `opentelemetry-api` is there: FastAPI (>= 0.16x, with its own
telemetry) requires and imports it; without an SDK it does nothing.
Each run gets a fresh database; the endpoints are called in one fixed order.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.apps import RunningApp, start_app

ROOT = Path(__file__).resolve().parents[1]
APP_SOURCE = Path(__file__).parent / "apps" / "sqla_styles.py"
BARE_VENV = ROOT / ".venv-bare"
# What the app imports (and SQLAlchemy's async extension needs); their dependencies follow.
APP_NEEDS = [
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "greenlet",
    "aiosqlite",
    "asyncpg",
    "psycopg",
    "psycopg-binary",
]
# FastAPI itself requires the API (a no-op without an SDK); nothing else of OpenTelemetry may be there.
ALLOWED_OTEL = {"opentelemetry-api"}
LISTENER_MODULE = "otel_perf.processors.orm"

# Every endpoint of the app, in the order they are called (later ones read what earlier ones wrote).
ENDPOINTS = [
    "/healthz",
    "/sync/text-select",
    "/sync/text-dml",
    "/sync/insert",
    "/sync/insert-returning",
    "/sync/update",
    "/sync/delete",
    "/sync/bulk-insert",
    "/sync/bulk-update",
    "/sync/add-all",
    "/sync/integrity-error",
    "/sync/query-legacy",
    "/sync/query-update",
    "/sync/query-delete",
    "/sync/get",
    "/sync/selectinload",
    "/sync/joinedload",
    "/sync/subqueryload",
    "/sync/raiseload",
    "/sync/lazy-loop",
    "/sync/merge",
    "/sync/refresh",
    "/sync/core",
    "/sync/scalars",
    "/sync/group-by",
    "/async/text",
    "/async/text-dml",
    "/async/insert",
    "/async/update",
    "/async/delete",
    "/async/scalars",
    "/async/run-sync-lazy",
    "/async/awaitable-attrs",
    "/async/gather",
    "/summary",
]
# The lazy-load N+1s (operation: repeats), sync and through run_sync on the async driver.
N_PLUS_ONE = {"GET /sync/lazy-loop": 10, "GET /async/run-sync-lazy": 8}
APP_ERRORS = {"/sync/raiseload": 409}  # the app's own error handling


@dataclass(frozen=True)
class Mode:
    launch: str  # start_app's launch
    env: dict[str, str] = field(default_factory=dict)
    analysis: bool = False  # otel-perf's analysis runs (its listener is installed, alerts are written)
    bare: bool = False  # the environment without otel-perf or OpenTelemetry


MODES = {
    "not-installed": Mode("plain", bare=True),
    "plain": Mode("plain"),
    "instrument": Mode("instrument", analysis=True),
    "instrument-perf-disabled": Mode("instrument", {"OTEL_PERF_ENABLED": "false"}),
    "instrument-sdk-disabled": Mode("instrument", {"OTEL_SDK_DISABLED": "true"}),
    "sitecustomize": Mode("sitecustomize", analysis=True),
    "sitecustomize-perf-disabled": Mode("sitecustomize", {"OTEL_PERF_ENABLED": "false"}),
}
BACKENDS = ["sqlite", "pg-psycopg", "pg-asyncpg"]
# Every launch mode on SQLite; on PostgreSQL the enabled launcher against the kill switch (and the
# drop-in once, with asyncpg).
MATRIX = [
    *[("sqlite", mode) for mode in MODES if mode != "not-installed"],
    *[
        (backend, mode)
        for backend in ("pg-psycopg", "pg-asyncpg")
        for mode in ("instrument", "instrument-perf-disabled")
    ],
    ("pg-asyncpg", "sitecustomize"),
]


# --- the environment without otel-perf -------------------------------------------------------------


def _app_requirements() -> list[str]:
    """The app's needs and everything they require, pinned at this environment's versions."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned: dict[str, str] = {}
    todo = list(APP_NEEDS)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in pinned:
            continue
        dist = metadata.distribution(name)
        pinned[name] = dist.version
        for spec in dist.requires or ():
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    leaked = [name for name in _otel(pinned) if name not in ALLOWED_OTEL]
    assert not leaked, f"the app's dependencies pull in {leaked}"
    return [f"{name}=={version}" for name, version in sorted(pinned.items())]


def _otel(names: Iterable[str]) -> set[str]:
    return {name for name in names if name.startswith(("opentelemetry", "otel-perf", "otel_perf"))}


def _installed(python: Path) -> set[str]:
    out = subprocess.run(
        [
            str(python),
            "-I",  # not the working directory's otel_perf.egg-info
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.name for d in m.distributions()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.strip().lower().replace("_", "-") for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="session")
def bare_python() -> Path:
    """`.venv-bare/bin/python`: the app's dependencies, no otel-perf, no OpenTelemetry."""
    requirements = "\n".join(_app_requirements()) + "\n"
    python = BARE_VENV / "bin" / "python"
    stamp = BARE_VENV / "requirements.txt"
    with open(Path(tempfile.gettempdir()) / "otel-perf-venv-bare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (python.exists() and stamp.exists() and stamp.read_text() == requirements):
            shutil.rmtree(BARE_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(BARE_VENV)], check=True)
            wanted = BARE_VENV / "requirements.in"
            wanted.write_text(requirements)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(wanted)],
                check=True,
            )
            stamp.write_text(requirements)  # last: an interrupted build is rebuilt
    leaked = _otel(_installed(python)) - ALLOWED_OTEL
    assert not leaked, f"{BARE_VENV} has {leaked}"
    return python


# --- one run: launch, call every endpoint, read what happened --------------------------------------


@dataclass
class Run:
    responses: dict[str, tuple[int, str, Any]]  # status, content type, body
    listeners: dict[str, list[str]]  # target: ["event: module.function", …]
    alerts: list[dict[str, Any]]
    log: str


def _body(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.text


def _database(backend: str, name: str, workdir: Path, postgres: Any) -> dict[str, str]:
    if backend == "sqlite":
        return {"DATABASE_URL": f"sqlite:///{workdir / 'app.db'}"}
    import psycopg

    name = name.replace("-", "_")
    server = f"{postgres.user}@127.0.0.1:{postgres.port}"
    with psycopg.connect(f"postgresql://{server}/shop", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    urls = {"DATABASE_URL": f"postgresql+psycopg://{server}/{name}"}
    if backend == "pg-asyncpg":
        urls["ASYNC_DATABASE_URL"] = f"postgresql+asyncpg://{server}/{name}"
    return urls  # pg-psycopg: the app's async engine uses async psycopg on the same URL


class Runner:
    def __init__(self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._request = request
        self._tmp = tmp_path_factory
        self._baselines: dict[str, Run] = {}

    def run(self, backend: str, mode_name: str) -> Run:
        mode = MODES[mode_name]
        workdir = self._tmp.mktemp(f"{backend}-{mode_name}")
        shutil.copy(APP_SOURCE, workdir / "main.py")
        postgres = self._request.getfixturevalue("postgres") if backend != "sqlite" else None
        env = {
            "OTEL_SERVICE_NAME": "sqla-styles",
            **_database(backend, f"sqla_{backend}_{mode_name}", workdir, postgres),
            **mode.env,
        }
        python = self._request.getfixturevalue("bare_python") if mode.bare else None
        app = start_app(workdir, mode.launch, env=env, seed=False, python=python)
        try:
            responses = {}
            for path in ENDPOINTS:
                response = httpx.get(app.base_url + path, timeout=30)
                content_type = response.headers.get("content-type", "")
                responses[path] = (response.status_code, content_type, _body(response))
            listeners = httpx.get(app.base_url + "/debug/listeners", timeout=10).json()
            alerts = _wait_for_n_plus_one(app) if mode.analysis else app.settle(1.0)
        finally:
            app.stop()
        return Run(responses, listeners, alerts, app.log())

    def baseline(self, backend: str) -> Run:
        if backend not in self._baselines:
            self._baselines[backend] = self.run(backend, "not-installed")
        return self._baselines[backend]


def _n_plus_ones(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {alert["operation"]: alert for alert in alerts if alert["type"] == "n_plus_one"}


def _wait_for_n_plus_one(app: RunningApp) -> list[dict[str, Any]]:
    return app.wait_for_alerts(lambda alerts: _n_plus_ones(alerts).keys() >= N_PLUS_ONE.keys())


@pytest.fixture(scope="module")
def runner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    yield Runner(request, tmp_path_factory)


def _ours(listeners: dict[str, list[str]]) -> dict[str, list[str]]:
    """otel-perf's SQLAlchemy listeners, by target (session, engine, dialect, …)."""
    found = {
        target: [entry for entry in entries if ": otel_perf." in entry]
        for target, entries in listeners.items()
    }
    return {target: entries for target, entries in found.items() if entries}


# --- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_reference_run_without_otel_perf(runner: Runner, backend: str) -> None:
    """The reference itself: every endpoint works (the app's own 409 where it means to), nothing
    hooks the sessions, nothing is written."""
    run = runner.baseline(backend)
    statuses = {path: status for path, (status, _, _) in run.responses.items()}
    assert statuses == {path: APP_ERRORS.get(path, 200) for path in ENDPOINTS}, run.log[-4000:]
    assert run.responses["/sync/raiseload"][2] == {
        "error": "not_loaded",
        "message": "'Order.customer' is not available due to lazy='raise'",
    }
    assert not _ours(run.listeners)
    assert not [entry for entries in run.listeners.values() for entry in entries if "opentelemetry" in entry]
    assert run.alerts == []
    assert "Traceback" not in run.log


@pytest.mark.parametrize(("backend", "mode"), MATRIX, ids=[f"{backend}-{mode}" for backend, mode in MATRIX])
def test_app_answers_exactly_as_without_otel_perf(runner: Runner, backend: str, mode: str) -> None:
    expected = runner.baseline(backend)
    run = runner.run(backend, mode)
    differing = [path for path in ENDPOINTS if run.responses[path] != expected.responses[path]]
    report = "\n".join(
        f"{path}: {json.dumps(run.responses[path])[:600]}\n"
        f"  without otel-perf: {json.dumps(expected.responses[path])[:600]}"
        for path in differing
    )
    assert not differing, f"{mode} on {backend} changed {differing}:\n{report}\napp log:\n{run.log[-4000:]}"
    assert "Traceback" not in run.log, run.log[-4000:]
    if MODES[mode].analysis:
        # Analysis ran, and the ORM listener named the lazy-loaded relationship.
        assert f"do_orm_execute: {LISTENER_MODULE}._on_orm_execute" in _ours(run.listeners)["session"]
        found = _n_plus_ones(run.alerts)
        for operation, repeats in N_PLUS_ONE.items():
            assert found[operation]["details"]["count"] == repeats
            assert found[operation]["details"]["orm_relationship"] == "Order.customer"
        assert "hook failed" not in run.log, run.log[-4000:]
    else:
        assert _ours(run.listeners) == {}, "otel-perf hooks into SQLAlchemy while switched off"
        assert run.alerts == []
        assert "otel-perf" not in run.log and "otel_perf" not in run.log, run.log[-4000:]


def test_endpoint_list_covers_every_route() -> None:
    """Guards the comparison: every endpoint of the app is called (only the debug one is not)."""
    source = APP_SOURCE.read_text()
    routes = [line.split('"')[1] for line in source.splitlines() if line.startswith("@app.get(")]
    assert sorted(set(routes) - {"/debug/listeners"}) == sorted(ENDPOINTS)
    assert len(routes) == len(set(routes))
