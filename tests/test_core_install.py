"""`pip install otel-perf` brings what `opentelemetry-instrument python main.py` needs and nothing
the app doesn't: no web framework, server, CLI toolkit or Prometheus client. The core's commands
work on it; the others name the extra they need."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.apps import QUIET_EXPORT
from tests.support.venvs import user_venv

# What the core must not pull (each is an extra's, or the app's own business).
NOT_IN_THE_CORE = [
    "fastapi",
    "uvicorn",
    "starlette",
    "typer",
    "rich",
    "prometheus_client",
    "yaml",
    "sqlalchemy",
]

APP = """
from opentelemetry import trace
from opentelemetry.trace import SpanKind

tracer = trace.get_tracer("script")
with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER):
    for customer in range(8):
        attributes = {"db.system": "sqlite", "db.statement": f"SELECT * FROM customers WHERE id = {customer}"}
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=attributes):
            pass
trace.get_tracer_provider().force_flush()
"""


@pytest.fixture(scope="module")
def core() -> Path:
    return user_venv("core", core=True)


def _run(
    binary: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_the_core_pulls_no_framework_server_or_cli_toolkit(core: Path) -> None:
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    present = json.loads(_run(core / "python", "-c", probe, *NOT_IN_THE_CORE).stdout)
    assert not any(present.values()), present


def test_the_core_analyses_an_instrumented_script(core: Path, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(APP)
    alerts = tmp_path / "alerts.jsonl"
    env = {
        "PATH": str(core),
        "HOME": str(tmp_path),
        **QUIET_EXPORT,
        "OTEL_PERF_ALERTS_FILE": str(alerts),
        "OTEL_PERF_ANALYSIS_CPU_SHARE": "1",
    }
    result = _run(core / "opentelemetry-instrument", str(core / "python"), "main.py", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    [alert] = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert alert["type"] == "n_plus_one" and alert["operation"] == "GET /orders"
    assert alert["details"]["statement"] == "SELECT * FROM customers WHERE id = ?"


def test_the_core_commands_work_and_the_others_name_their_extra(core: Path, tmp_path: Path) -> None:
    cli = core / "otel-perf"
    assert Path(_run(cli, "sitecustomize").stdout.strip(), "sitecustomize.py").is_file()
    settings = _run(cli, "settings")
    assert settings.returncode == 0 and "OTEL_PERF_ENABLED" in settings.stdout
    quiet = tmp_path / "quiet.jsonl"  # one healthy request: nothing to find
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "GET /ping", "kind": 2}
    span |= {"startTimeUnixNano": "1795000000000000000", "endTimeUnixNano": "1795000000002000000"}
    quiet.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}) + "\n")
    analyzed = _run(cli, "analyze", str(quiet))
    assert analyzed.returncode == 0 and "No findings." in analyzed.stderr, analyzed.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    analyzed = _run(cli, "analyze", str(empty))  # not "no findings": a CI gate would pass on it
    assert analyzed.returncode == 2 and "no OTLP trace lines found" in analyzed.stderr, analyzed.stderr
    for command, extra in (("demo", "demo"), ("analyzer", "analyzer"), ("rig", "stack")):
        args = [command, "status"] if command == "rig" else [command]
        result = _run(cli, *args)
        assert result.returncode == 2, (command, result.stderr)
        assert f"pip install 'otel-perf[{extra}]'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
