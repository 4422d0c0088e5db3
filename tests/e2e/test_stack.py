"""The configs in collector/ are valid for the built binaries, and `otel-perf rig` brings the whole
stack up on the standard ports and takes it down leaving nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from otel_perf.stack import toolchain
from otel_perf.stack.rig import Stack, StackPorts

COLLECTOR_DIR = Path(__file__).resolve().parents[2] / "collector"
OTEL_PERF = str(Path(sys.executable).parent / "otel-perf")
TWO_ANALYZERS = {"OTEL_PERF_ANALYZERS": "[127.0.0.1:14317, 127.0.0.1:14319]"}


def _validate(
    binary: Path, config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize("name", ["gateway.yaml", "agent.yaml"])
@pytest.mark.parametrize("env", [{}, TWO_ANALYZERS], ids=["defaults", "two-analyzers"])
def test_collector_configs_validate(name: str, env: dict[str, str]) -> None:
    result = _validate(toolchain.ensure_binary("otelcol"), COLLECTOR_DIR / name, env)
    assert result.returncode == 0, result.stderr


def test_jaeger_config_validates() -> None:
    result = _validate(toolchain.ensure_binary("jaeger"), COLLECTOR_DIR / "jaeger.yaml")
    assert result.returncode == 0, result.stderr


def test_validation_really_checks(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (COLLECTOR_DIR / "gateway.yaml")
        .read_text()
        .replace("processors: [filter/alert-spans]", "processors: [filter/alert-spanz]")
    )
    result = _validate(toolchain.ensure_binary("otelcol"), broken)
    assert result.returncode != 0 and "alert-spanz" in result.stderr


def test_every_collector_config_is_covered() -> None:
    configs = {path.name for path in COLLECTOR_DIR.glob("*.y*ml")} - {"manifest.yaml"}
    assert configs == {
        "gateway.yaml",
        "agent.yaml",
        "jaeger.yaml",
        "alertmanager.yml",
        "gateway-analyzer-auth.yaml",
    }
    # alertmanager.yml is loaded by every stack these tests start (a bad file fails `rig up`);
    # gateway-analyzer-auth.yaml (an overlay) is validated and run by tests/e2e/test_analyzer_auth.py.


def test_rig_up_status_down_on_the_standard_ports(tmp_path: Path) -> None:
    state = tmp_path / "rig"
    up = subprocess.run(
        [OTEL_PERF, "rig", "up", "--state-dir", str(state)], capture_output=True, text=True, timeout=600
    )
    stack = Stack.from_state(state)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert stack.ports == StackPorts()
        status = subprocess.run(
            [OTEL_PERF, "rig", "status", "--state-dir", str(state)], capture_output=True, text=True
        )
        assert status.returncode == 0, status.stdout
        for name in ("collector", "analyzer-1", "jaeger", "alertmanager"):
            assert name in status.stdout
        assert httpx.get("http://127.0.0.1:13133/").status_code == 200
        assert httpx.get("http://127.0.0.1:16686/api/services").status_code == 200
        assert httpx.get("http://127.0.0.1:9093/-/ready").status_code == 200
        pids = [service.pid for service in stack.status()]
        assert all(pids)
    finally:
        down = subprocess.run(
            [OTEL_PERF, "rig", "down", "--state-dir", str(state)], capture_output=True, text=True, timeout=120
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    after = subprocess.run(
        [OTEL_PERF, "rig", "status", "--state-dir", str(state)], capture_output=True, text=True
    )
    assert after.returncode == 3 and "stopped" in after.stdout
