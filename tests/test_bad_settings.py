"""Bad `OTEL_PERF_*` values in real processes: an app under `opentelemetry-instrument` (and the
sitecustomize launch) runs as without them, says each in one line naming it, and otel-perf still
works on the defaults; `otel-perf analyze`, `analyzer`, `demo` and `rig up` stop with one line
naming the variable (exit 2), never a traceback. A path whose directory is missing is said, and
no directory is created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_perf.processors.config import Section
from otel_perf.settings import Settings
from tests.support.apps import BIN, QUIET_EXPORT, SITECUSTOMIZE_DIR

OTEL_PERF = str(BIN / "otel-perf")

# Six identical queries one after another under one request: an N+1 on any settings.
APP = """
import json, os, sys, time
from opentelemetry import trace
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("app")
with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER, attributes={"http.route": "/orders"}):
    for number in range(6):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={
            "db.system": "sqlite", "db.statement": f"SELECT * FROM customers WHERE id = {number}"}):
            time.sleep(0.002)
alerts = os.environ["OTEL_PERF_ALERTS_FILE"]
deadline = time.monotonic() + float(os.environ.get("APP_WAIT_S", "15"))
while time.monotonic() < deadline and not (os.path.exists(alerts) and os.path.getsize(alerts)):
    time.sleep(0.05)
print("app done", flush=True)
"""


def _env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "PYTHONPATH"))},
        **QUIET_EXPORT,
        "OTEL_SERVICE_NAME": "app",
        "OTEL_PERF_ALERTS_FILE": str(tmp_path / "alerts.jsonl"),
        "OTEL_PERF_ALERTS_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        "OTEL_PERF_ANALYSIS_CPU_SHARE": "1",
        "OTEL_PERF_MONITOR_STATE_PATH": ":memory:",
        **extra,
    }


def _run_app(tmp_path: Path, extra: dict[str, str], launch: str = "instrument") -> tuple[str, list[dict]]:
    (tmp_path / "app.py").write_text(APP)
    env = _env(tmp_path, extra)
    argv = [sys.executable, "app.py"]
    if launch == "instrument":
        argv = [str(BIN / "opentelemetry-instrument"), *argv]
    else:
        env["PYTHONPATH"] = SITECUSTOMIZE_DIR
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "app done" in done.stdout and "Traceback" not in output, output
    alerts_file = Path(env["OTEL_PERF_ALERTS_FILE"])
    alerts = (
        [json.loads(line) for line in alerts_file.read_text().splitlines()] if alerts_file.exists() else []
    )
    return done.stderr, alerts


def _lines_naming(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if name in line]


BAD_IN_APP = {
    "OTEL_PERF_MAX_TRACES": "lots",
    "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS": "1",
    "OTEL_PERF_N_PLUS_ONE_SCOPES": '{"operation:GET /orders": {"min_repeats": "many"}',
    "OTEL_PERF_ALERTS_COOLDOWN_S": "inf",
    "OTEL_PERF_MONITOR_HISTORY_DAYS": "1e300",
    "OTEL_PERF_ALERTS_WEBHOOK_URL": "ftp://hooks.example/x",
    "OTEL_PERF_MODE": "everywhere",
    "OTEL_PERF_N_PLUS_ONE_THRESHHOLD": "3",  # a typo
}


@pytest.mark.parametrize("launch", ["instrument", "sitecustomize"])
def test_the_app_runs_and_names_each_bad_value_once(tmp_path: Path, launch: str) -> None:
    stderr, alerts = _run_app(tmp_path, BAD_IN_APP, launch)
    for variable in BAD_IN_APP:
        assert len(_lines_naming(stderr, variable)) == 1, (variable, stderr)
    assert "did you mean OTEL_PERF_N_PLUS_ONE_" in _lines_naming(stderr, "THRESHHOLD")[0]
    assert "webhook" not in stderr.lower().replace("otel_perf_alerts_webhook_url", "")
    assert "hooks.example" not in stderr  # a webhook URL is a secret, even a wrong one
    # otel-perf goes on, on the defaults: the N+1 is alerted.
    assert [alert["type"] for alert in alerts] == ["n_plus_one"], stderr


def test_paths_whose_directory_is_missing_are_said_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    stderr, alerts = _run_app(
        tmp_path,
        {
            "OTEL_PERF_ALERTS_OUTBOX_PATH": str(missing / "outbox" / "alerts.sqlite3"),
            "OTEL_PERF_MONITOR_STATE_PATH": str(missing / "state" / "monitors.sqlite3"),
            "OTEL_PERF_RESOURCE_DISK_PATH": str(missing / "disk"),
            "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.05",
        },
    )
    assert not missing.exists()
    for variable in (
        "OTEL_PERF_ALERTS_OUTBOX_PATH",
        "OTEL_PERF_MONITOR_STATE_PATH",
        "OTEL_PERF_RESOURCE_DISK_PATH",
    ):
        [line] = _lines_naming(stderr, variable)
        assert "does not exist" in line or "No such file" in line, line
    assert [alert["type"] for alert in alerts] == ["n_plus_one"], stderr  # outbox in memory, delivered
    # The alerts file itself: its directory is not created either.
    stderr, _ = _run_app(
        tmp_path, {"OTEL_PERF_ALERTS_FILE": str(missing / "alerts.jsonl"), "APP_WAIT_S": "0.5"}
    )
    [line] = _lines_naming(stderr, "OTEL_PERF_ALERTS_FILE")
    assert "does not exist" in line and not missing.exists()


def _one_per_section() -> list[tuple[str, str]]:
    """A refused value for one variable of each section (the unit audit covers every variable)."""
    from tests.unit.test_settings_audit import _fields, bad_values

    chosen: dict[type[Section], tuple[str, str]] = {}
    for variable, section, field, info in _fields():
        values = bad_values(variable, field, info)
        if values and section not in chosen and field != "scopes":
            chosen[section] = (variable, values[0])
    assert len(chosen) == len(Settings.sections())
    return list(chosen.values())


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OTEL_PERF, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_otel_perf_analyze_stops_on_any_section_s_bad_value(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for variable, value in _one_per_section():
        done = _cli("analyze", str(empty), env=_env(tmp_path, {variable: value}))
        assert done.returncode == 2, (variable, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"otel-perf: {variable}=") and "is invalid: " in line, line


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OTEL_PERF_ANALYZER_MAX_REQUEST_BYTES", str(2**40), "less than or equal to"),
        ("OTEL_PERF_TREND_QUANTILE", "1.5", "less than 1"),
        ("OTEL_PERF_ALERTS_MAX_CLOCK_SKEW_S", "nan", "finite number"),
        ("OTEL_PERF_ANALYZER_HTTP_ENDPOINT", "no-such-host.invalid:14318", "can't listen there"),
    ],
)
def test_otel_perf_analyzer_stops_with_one_line(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    from tests.support.apps import free_port

    endpoints = {
        "OTEL_PERF_ANALYZER_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTEL_PERF_ANALYZER_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
    }
    done = _cli("analyzer", env=_env(tmp_path, {**endpoints, variable: value}), timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"otel-perf: {variable}=") and expected in line, line


def test_otel_perf_analyzer_names_its_bad_value(tmp_path: Path) -> None:
    done = _cli("analyzer", env=_env(tmp_path, {"OTEL_PERF_ANALYZER_MAX_BUFFERED_SPANS": "0"}))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("otel-perf: OTEL_PERF_ANALYZER_MAX_BUFFERED_SPANS='0' is invalid: "), line
    assert "greater than or equal to 1" in line


@pytest.mark.parametrize("command", [["demo"], ["rig", "up", "--state-dir", "{tmp}/rig"]])
def test_demo_and_rig_stop_before_starting_anything(tmp_path: Path, command: list[str]) -> None:
    argv = [part.replace("{tmp}", str(tmp_path)) for part in command]
    done = _cli(*argv, env=_env(tmp_path, {"OTEL_PERF_SLOW_SPAN_DB_MS": "-5"}))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("otel-perf: OTEL_PERF_SLOW_SPAN_DB_MS='-5' is invalid: "), line
    assert not (tmp_path / "rig").exists()
