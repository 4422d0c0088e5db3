"""`otel-perf doctor` as a user runs it: a real process in a real environment, with a real collector
(gRPC and HTTP receivers) or a closed port, a real webhook server, and a venv of its own where
SQLAlchemy 2.1 makes `opentelemetry-instrument` skip the SQLAlchemy instrumentation and where
opentelemetry-distro competes with otel-perf's distro and configurator. Its predictions are checked
against what the real launcher does in the same venv."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.processes import free_port, start, stop, wait_for_port
from otel_perf.stack import toolchain
from tests.support.recorder import Recorder
from tests.support.venvs import BOOTSTRAP_FAMILY, REPO

BIN = Path(sys.executable).parent
TEST_DEPS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "otel-perf" / "test-deps"
# The doctor's venv: SQLAlchemy 2.1 (which opentelemetry-instrumentation-sqlalchemy <= 0.66b2 does not
# instrument), opentelemetry-distro (a second distro and configurator), and a driver instrumentation
# (sqlite3: the standard library's driver, always there). The family pinned as tests/support/venvs.py
# does (the registry serves the 0.66b1 line whole).
CONFLICT_PACKAGES = (
    "sqlalchemy==2.1.9",
    "opentelemetry-distro",
    "opentelemetry-instrumentation-sqlite3",
    *BOOTSTRAP_FAMILY,
)
NO_EXPORT = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}

COLLECTOR_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${env:DOCTOR_GRPC_PORT}
      http:
        endpoint: 127.0.0.1:${env:DOCTOR_HTTP_PORT}
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    traces: {receivers: [otlp], exporters: [debug]}
    metrics: {receivers: [otlp], exporters: [debug]}
    logs: {receivers: [otlp], exporters: [debug]}
"""


def _doctor(
    env: dict[str, str], *args: str, bin_dir: Path = BIN, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`otel-perf doctor` run as a user runs it: the environment's bin first on PATH, the app's
    variables and nothing else of OpenTelemetry's."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "PYTHONPATH"))}
    return subprocess.run(
        [str(bin_dir / "otel-perf"), "doctor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, "PATH": f"{bin_dir}{os.pathsep}{base.get('PATH', '')}", **env},
    )


def _line(output: str, mark: str, subject: str) -> str:
    """The report line of `subject` with verdict `mark` (✓ ! ✗ ·); fails naming the report if none."""
    for line in output.splitlines():
        if line.strip().startswith(f"{mark} {subject}"):
            return line
    raise AssertionError(f"no {mark} {subject!r} line in:\n{output}")


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """The built collector with OTLP gRPC and HTTP receivers on loopback: (gRPC port, HTTP port)."""
    workdir = tmp_path_factory.mktemp("collector")
    config = workdir / "collector.yaml"
    config.write_text(COLLECTOR_CONFIG)
    grpc_port, http_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    process = start(
        [str(toolchain.ensure_binary("otelcol")), "--config", str(config)],
        {**env, "DOCTOR_GRPC_PORT": str(grpc_port), "DOCTOR_HTTP_PORT": str(http_port)},
        workdir / "collector.log",
    )
    try:
        wait_for_port(grpc_port, process)
        wait_for_port(http_port, process)
        yield grpc_port, http_port
    finally:
        stop(process)


def test_a_healthy_environment_passes_and_says_what_is_traced(collector: tuple[int, int]) -> None:
    grpc_port, http_port = collector
    result = _doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}"})
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "active (SQLAlchemy 2.0" in _line(out, "✓", "sqlalchemy")
    assert "active (fastapi" in _line(out, "✓", "fastapi")
    assert "otel_perf is loaded" in _line(out, "✓", "distro")
    assert "otel_perf is loaded" in _line(out, "✓", "configurator")
    assert "on, mode both" in _line(out, "✓", "otel-perf")
    assert "a collector answers" in _line(out, "✓", f"OTLP grpc 127.0.0.1:{grpc_port}")
    assert "✗" not in out and result.stderr == ""

    # OTLP/HTTP: an empty export request, really posted and accepted.
    http = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    result = _doctor({**http, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{http_port}"})
    assert result.returncode == 0, result.stdout
    assert "accepts an empty OTLP export" in _line(result.stdout, "✓", f"OTLP http 127.0.0.1:{http_port}")
    # … which a port that accepts connections but speaks no OTLP/HTTP (the gRPC one) does not pass.
    result = _doctor({**http, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}"})
    assert result.returncode == 1, result.stdout
    line = _line(result.stdout, "✗", f"OTLP http 127.0.0.1:{grpc_port}")
    assert "it accepts connections, but an empty OTLP/HTTP export fails" in line


def test_an_unreachable_collector_fails_when_the_mode_needs_it() -> None:
    closed = free_port()  # bound, then released: nothing listens there
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}"}
    result = _doctor(endpoint)
    assert result.returncode == 1, result.stdout
    line = _line(result.stdout, "✗", f"OTLP grpc 127.0.0.1:{closed}")
    assert "connection refused" in line and "mode both needs a collector" in line
    assert "OTEL_PERF_MODE=in_process" in line
    # Analysing in the app only, the collector is no longer needed: a warning, exit 0.
    result = _doctor({**endpoint, "OTEL_PERF_MODE": "in_process"})
    assert result.returncode == 0, result.stdout
    assert "connection refused" in _line(result.stdout, "!", f"OTLP grpc 127.0.0.1:{closed}")
    assert "in_process (env)" in _line(result.stdout, "✓", "OTEL_PERF_MODE")


def test_unknown_names_warn_and_invalid_values_fail_with_the_apps_message(tmp_path: Path) -> None:
    quiet = {**NO_EXPORT, "OTEL_PERF_MODE": "in_process"}
    result = _doctor({**quiet, "OTEL_PERF_N_PLUS_ONE_MIN_REPEAT": "3"})
    assert result.returncode == 0, result.stdout
    line = _line(result.stdout, "!", "OTEL_PERF_N_PLUS_ONE_MIN_REPEAT ")
    assert "did you mean OTEL_PERF_N_PLUS_ONE_MIN_REPEATS?" in line

    bad = {**quiet, "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS": "many"}
    result = _doctor(bad)
    assert result.returncode == 1, result.stdout
    line = _line(result.stdout, "✗", "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS")
    # The very line the app logs for it (`otel-perf settings` reads the settings as the app does).
    base = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    logged = subprocess.run(
        [str(BIN / "otel-perf"), "settings"], capture_output=True, text=True, env={**base, **bad}, timeout=60
    ).stderr
    message = re.search(r"otel-perf: (OTEL_PERF_N_PLUS_ONE_MIN_REPEATS=.*?); using the default", logged)
    assert message, logged
    assert message.group(1) in line


def test_secrets_never_show_and_the_webhook_gets_no_request(recorder: Recorder) -> None:
    port = recorder.server.server_address[1]
    secrets = (
        "hookuser",
        "hookpass",
        "T0SECRET",
        "B0SECRET",
        "PATHTOKEN",
        "QUERYTOKEN",
        "ANALYZERTOKEN",
        "HEADERTOKEN",
    )
    env = {
        **NO_EXPORT,
        "OTEL_PERF_MODE": "in_process",
        "OTEL_PERF_ALERTS_WEBHOOK_URL": (
            f"http://hookuser:hookpass@127.0.0.1:{port}/services/T0SECRET/B0SECRET/PATHTOKEN?token=QUERYTOKEN"
        ),
        "OTEL_PERF_ANALYZER_AUTH_TOKEN": "ANALYZERTOKEN",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20HEADERTOKEN",
    }
    for args in ((), ("--all",), ("--json",)):
        result = _doctor(env, *args)
        assert result.returncode == 0, result.stdout
        for secret in secrets:
            assert secret not in result.stdout + result.stderr, (args, secret)
    text = _doctor(env).stdout
    assert "accepts connections" in _line(text, "✓", f"webhook http://127.0.0.1:{port}")
    assert f"http://127.0.0.1:{port}/***" in _line(text, "✓", "OTEL_PERF_ALERTS_WEBHOOK_URL")
    assert "*** (env)" in _line(text, "✓", "OTEL_PERF_ANALYZER_AUTH_TOKEN")
    assert recorder.requests == []  # a connect only: no alert was posted
    # An invalid one is named, its value not shown.
    result = _doctor(
        {**env, "OTEL_PERF_ALERTS_WEBHOOK_URL": "ftp://hookuser:hookpass@example.invalid/PATHTOKEN"}
    )
    assert result.returncode == 1
    assert "'***' is invalid" in _line(result.stdout, "✗", "OTEL_PERF_ALERTS_WEBHOOK_URL")
    for secret in secrets:
        assert secret not in result.stdout + result.stderr


def _dependencies_key() -> str:
    """What the venv depends on: the project's dependencies, the packages added, the interpreter
    and where the tree is (the editable install points there)."""
    pyproject = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[.*?^\]", pyproject, re.S | re.M)
    text = "\n".join([block.group(0) if block else pyproject, *CONFLICT_PACKAGES, sys.version, str(REPO)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _run(*argv: str | Path) -> None:
    result = subprocess.run([str(part) for part in argv], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def conflict_venv() -> Path:
    """The `bin` of a real venv: otel-perf from this tree (editable: this session's code), SQLAlchemy
    2.1.9, opentelemetry-distro and the sqlite3 instrumentation. Built once per dependency set under
    the user's cache (about 15 s from pip's cache), then reused."""
    TEST_DEPS.mkdir(parents=True, exist_ok=True)
    root = TEST_DEPS / f"doctor-venv-{_dependencies_key()}"
    with open(TEST_DEPS / "doctor-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".ready").exists():
            for stale in TEST_DEPS.glob("doctor-venv-*"):
                if stale.is_dir():
                    shutil.rmtree(stale)
            _run(sys.executable, "-m", "venv", "--clear", root)
            _run(root / "bin" / "python", "-m", "pip", "install", "--quiet", "-e", REPO, *CONFLICT_PACKAGES)
            (root / ".ready").write_text("ready\n")
    return root / "bin"


def _sqlalchemy_20() -> Path:
    """SQLAlchemy 2.0 from PyPI in a cached directory, to put in front of the venv's 2.1 (PYTHONPATH)."""
    target = TEST_DEPS / "sqlalchemy-2.0.58"
    if not (target / "sqlalchemy").is_dir():
        _run(
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            target,
            "sqlalchemy==2.0.58",
        )
    return target


def _launcher_says(bin_dir: Path, env: dict[str, str]) -> str:
    """What the real `opentelemetry-instrument` logs while starting an app in that venv."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "PYTHONPATH"))}
    result = subprocess.run(
        [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"), "-c", "print('app ran')"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **NO_EXPORT, "OTEL_PERF_ALERTS_OUTBOX_PATH": ":memory:", **env},
    )
    assert "app ran" in result.stdout, result.stdout + result.stderr
    return result.stderr


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_a_skipped_instrumentation_and_a_second_distro_in_a_real_venv() -> None:
    bin_dir = conflict_venv()
    env = {**NO_EXPORT, "OTEL_PERF_MODE": "in_process"}
    result = _doctor(env, bin_dir=bin_dir)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    line = _line(out, "✗", "sqlalchemy")
    assert "sqlalchemy 2.1.9 is installed, but it instruments only sqlalchemy>=1.0.0,<2.1.0" in line
    assert "no database query is traced" in line and "pip install 'sqlalchemy<2.1'" in line
    assert "active" in _line(out, "✓", "sqlite3")
    assert "fastapi" in _line(out, "·", "not installed")

    # Two distros and two configurators: the doctor names the one the launcher loads, and the
    # launcher's own warning about the other agrees.
    report = _json(_doctor(env, "--json", bin_dir=bin_dir))
    launcher = {check["subject"]: check for check in report["checks"] if check["section"] == "launcher"}
    assert set(launcher["configurator"]["installed"]) == {"otel_perf", "configurator"}
    loaded = launcher["configurator"]["loaded"]
    other = ({"otel_perf", "configurator"} - {loaded}).pop()
    said = _launcher_says(bin_dir, env)
    assert f"Configuration of {other} not loaded, {loaded} already loaded" in said, said
    assert launcher["configurator"]["sdk_says"] == [
        f"Configuration of {other} not loaded, {loaded} already loaded"
    ]
    assert launcher["configurator"]["status"] == ("ok" if loaded == "otel_perf" else "problem")

    # opentelemetry-distro's picked: the doctor fails and says how to pick otel-perf's; the launcher
    # indeed does not run otel-perf's configurator.
    theirs = {**env, "OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"}
    result = _doctor(theirs, bin_dir=bin_dir)
    assert result.returncode == 1
    assert "OTEL_PYTHON_DISTRO=otel_perf" in _line(result.stdout, "✗", "distro")
    configurator = _line(result.stdout, "✗", "configurator")
    assert "configurator is loaded, not otel_perf" in configurator
    assert "OTEL_PYTHON_CONFIGURATOR=otel_perf" in configurator
    said = _launcher_says(bin_dir, theirs)
    assert "otel-perf 0.1.0 on" not in said and "Configuration of otel_perf not loaded" in said, said

    # SQLAlchemy 2.0 in front: its instrumentation is active, and so is the driver's beneath it.
    older = {**env, "PYTHONPATH": str(_sqlalchemy_20())}
    result = _doctor(older, bin_dir=bin_dir)
    assert "active (SQLAlchemy 2.0.58)" in _line(result.stdout, "✓", "sqlalchemy")
    line = _line(result.stdout, "!", "duplicate spans")
    assert "sqlite3 instrumented beside sqlalchemy" in line
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=sqlite3" in line
    result = _doctor({**older, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlite3"}, bin_dir=bin_dir)
    assert "duplicate spans" not in result.stdout
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in _line(result.stdout, "·", "sqlite3")


def test_json_has_the_same_verdicts_as_the_text(collector: tuple[int, int]) -> None:
    grpc_port, _ = collector
    for env in (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{grpc_port}", "OTEL_PERF_QUIET": "true"},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "OTEL_PERF_MAX_TRACES": "0",
            "OTEL_PERF_N_PLUS_ONE_MIN_REPEAT": "3",
        },
    ):
        text = _doctor(env, "--all")
        machine = _doctor(env, "--all", "--json")
        report = _json(machine)
        assert machine.returncode == text.returncode == report["exit_code"]
        assert report["ok"] is (text.returncode == 0)
        marks = {"ok": "✓", "warning": "!", "problem": "✗", "info": "·"}
        for check in report["checks"]:
            assert _line(text.stdout, marks[check["status"]], check["subject"])
        lines = [line.strip() for line in text.stdout.splitlines()]
        assert report["problems"] == sum(line.startswith("✗") for line in lines)
        assert report["warnings"] == sum(line.startswith("!") for line in lines)
    assert report["problems"] >= 2  # the closed port and OTEL_PERF_MAX_TRACES=0
    settings = {check["subject"]: check for check in report["checks"] if check["section"] == "settings"}
    assert settings["OTEL_PERF_MAX_TRACES"]["valid"] is False
    assert settings["OTEL_PERF_N_PLUS_ONE_MIN_REPEAT"]["suggestion"] == "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS"
    assert settings["OTEL_PERF_MODE"]["source"] == "default"  # --all: the defaults too
