"""The Go toolchain: manifest and pinned versions agree, the cached binaries run, overrides are checked.

The binary tests build into the real cache (``scripts/test`` builds beforehand, so they normally just
find the files) and fail, never skip, when a binary can't be provided: the e2e tests depend on them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from otel_perf.errors import ToolchainError
from otel_perf.stack import toolchain

CORE = "go.opentelemetry.io/collector"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"

EXPECTED_COMPONENTS = {
    "receivers": [f"{CORE}/receiver/otlpreceiver", f"{CONTRIB}/receiver/hostmetricsreceiver"],
    "processors": [
        f"{CORE}/processor/memorylimiterprocessor",
        f"{CORE}/processor/batchprocessor",
        f"{CONTRIB}/processor/groupbytraceprocessor",
        f"{CONTRIB}/processor/tailsamplingprocessor",
        f"{CONTRIB}/processor/filterprocessor",
        f"{CONTRIB}/processor/transformprocessor",
    ],
    "connectors": [f"{CONTRIB}/connector/spanmetricsconnector", f"{CONTRIB}/connector/routingconnector"],
    "exporters": [
        f"{CORE}/exporter/otlpexporter",
        f"{CORE}/exporter/otlphttpexporter",
        f"{CORE}/exporter/debugexporter",
        f"{CONTRIB}/exporter/fileexporter",
        f"{CONTRIB}/exporter/prometheusexporter",
        f"{CONTRIB}/exporter/loadbalancingexporter",
        f"{CONTRIB}/exporter/alertmanagerexporter",
    ],
    "extensions": [
        f"{CONTRIB}/extension/healthcheckextension",
        f"{CONTRIB}/extension/bearertokenauthextension",
        f"{CONTRIB}/extension/storage/filestorage",
    ],
}

# Component type names as `otelcol components` prints them at v0.144.0 (what configs must use).
EXPECTED_TYPES = {
    "receivers": {"otlp", "hostmetrics"},
    "processors": {"memory_limiter", "batch", "groupbytrace", "tail_sampling", "filter", "transform"},
    "connectors": {"spanmetrics", "routing"},
    "exporters": {"otlp_grpc", "otlp_http", "debug", "file", "prometheus", "loadbalancing", "alertmanager"},
    "extensions": {"health_check", "bearertokenauth", "file_storage"},
}

# Building from cold takes ~10 min in all (collector ~3.5, Jaeger ~5): longer than the default timeout.
BUILD_TIMEOUT = 1800


# --------------------------------------------------------------------------------------------- (a) manifest


def test_manifest_lists_every_component_at_the_pinned_version() -> None:
    manifest = yaml.safe_load(toolchain.manifest_path().read_text(encoding="utf-8"))
    assert manifest["dist"]["name"] == "otelcol-perf"
    assert "output_path" not in manifest["dist"], "the toolchain sets output_path per build"
    modules = toolchain.manifest_modules(manifest)
    assert {section: [m for m, _ in entries] for section, entries in modules.items()} == EXPECTED_COMPONENTS
    versions = {version for entries in modules.values() for _, version in entries}
    assert versions == {"v0.144.0"}
    assert toolchain.VERSIONS["otelcol"] == toolchain.VERSIONS["ocb"] == "v0.144.0"
    assert manifest["dist"]["version"] == toolchain.VERSIONS["otelcol"].removeprefix("v")


def test_pinned_versions() -> None:
    assert toolchain.VERSIONS == {
        "otelcol": "v0.144.0",
        "ocb": "v0.144.0",
        "jaeger": "v1.76.0",
        "alertmanager": "v0.31.1",
        "telemetrygen": "v0.143.0",
    }
    assert set(toolchain.BINARIES) == {"otelcol", "jaeger", "alertmanager", "telemetrygen"}


def test_mixed_manifest_versions_are_refused() -> None:
    manifest = yaml.safe_load(toolchain.manifest_path().read_text(encoding="utf-8"))
    manifest["exporters"][0]["gomod"] = f"{CORE}/exporter/otlpexporter v0.145.0"
    with pytest.raises(ToolchainError, match="mixes component versions"):
        toolchain.collector_version(manifest)


# --------------------------------------------------------------------------------------------- cache layout


def test_cache_paths_are_keyed_by_version_and_manifest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in toolchain.OVERRIDE_ENV.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(toolchain.BIN_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert toolchain.cache_dir() == tmp_path / "xdg" / "otel-perf" / "bin"

    monkeypatch.setenv(toolchain.BIN_DIR_ENV, str(tmp_path / "bins"))
    sha8 = hashlib.sha256(toolchain.manifest_path().read_bytes()).hexdigest()[:8]
    assert toolchain.binary_path("otelcol") == tmp_path / "bins" / f"otelcol-perf-v0.144.0-{sha8}"
    assert toolchain.binary_path("jaeger") == tmp_path / "bins" / "jaeger-v1.76.0"
    assert toolchain.binary_path("alertmanager") == tmp_path / "bins" / "alertmanager-v0.31.1"
    assert toolchain.binary_path("telemetrygen") == tmp_path / "bins" / "telemetrygen-v0.143.0"
    with pytest.raises(ToolchainError, match="unknown binary"):
        toolchain.binary_path("prometheus")


def test_print_paths_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(toolchain.BIN_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("OTEL_PERF_JAEGER_BIN", raising=False)
    assert toolchain.main(["--print-paths", "jaeger"]) == 0
    assert capsys.readouterr().out == f"jaeger\t{tmp_path / 'jaeger-v1.76.0'}\n"
    assert not list(tmp_path.iterdir()), "--print-paths builds nothing"


def test_missing_go_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(toolchain.BIN_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("OTEL_PERF_TELEMETRYGEN_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolchainError, match=r"go not found on PATH: install Go >= 1\.24"):
        toolchain.ensure_binary("telemetrygen", progress=lambda name, msg: None)
    assert not toolchain.binary_path("telemetrygen").exists()


def test_failed_build_reports_command_and_output_tail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    go = fake_bin / "go"
    go.write_text(
        '#!/bin/sh\n[ "$1" = env ] && { echo go1.26.0; exit 0; }\n'
        'i=0; while [ $i -lt 100 ]; do echo "line $i"; i=$((i+1)); done\n'
        'echo "GOSUMDB=$GOSUMDB"; echo "boom: module not served" >&2; exit 3\n'
    )
    go.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    monkeypatch.setenv(toolchain.BIN_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("OTEL_PERF_TELEMETRYGEN_BIN", raising=False)
    monkeypatch.delenv("GOSUMDB", raising=False)
    with pytest.raises(ToolchainError) as info:
        toolchain.ensure_binary("telemetrygen", progress=lambda name, msg: None)
    message = str(info.value)
    assert (
        "go install github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v0.143.0"
        in message
    )
    assert "exited with status 3" in message
    assert "boom: module not served" in message and "GOSUMDB=off" in message  # the tail, with our env
    assert "line 59" not in message, "only the last ~40 lines"
    assert "OTEL_PERF_TELEMETRYGEN_BIN" in message
    assert "GOSUMDB" not in os.environ, "GOSUMDB=off is for the go subprocesses only"
    assert not toolchain.binary_path("telemetrygen").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".build-")], "scratch removed"


def test_concurrent_builds_build_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(toolchain.BIN_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("OTEL_PERF_TELEMETRYGEN_BIN", raising=False)
    builds: list[Path] = []

    def fake_build(target: Path, report: toolchain.Progress) -> None:
        builds.append(target)
        time.sleep(0.5)
        built = target.parent / "fake-output"
        built.write_text("#!/bin/sh\n")
        built.chmod(0o755)
        toolchain.install(built, target)

    monkeypatch.setitem(toolchain._BUILDERS, "telemetrygen", fake_build)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: toolchain.ensure_binary("telemetrygen", lambda n, m: None), range(2)))
    assert paths == [tmp_path / "telemetrygen-v0.143.0"] * 2
    assert len(builds) == 1, "the second caller waits on the lock, then finds the binary"


# --------------------------------------------------------------------------------------------- (c) overrides


def test_override_pointing_nowhere_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-jaeger"
    monkeypatch.setenv("OTEL_PERF_JAEGER_BIN", str(missing))
    assert toolchain.binary_path("jaeger") == missing
    with pytest.raises(ToolchainError, match=r"OTEL_PERF_JAEGER_BIN=.*no-such-jaeger.*no such file"):
        toolchain.ensure_binary("jaeger")


def test_override_not_executable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plain = tmp_path / "alertmanager"
    plain.write_text("not a program")
    plain.chmod(0o644)
    monkeypatch.setenv("OTEL_PERF_ALERTMANAGER_BIN", str(plain))
    with pytest.raises(ToolchainError, match=r"OTEL_PERF_ALERTMANAGER_BIN=.*not executable"):
        toolchain.ensure_binaries(["alertmanager"])


def test_override_is_used_as_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    script = tmp_path / "my-otelcol"
    script.write_text("#!/bin/sh\necho mine\n")
    script.chmod(0o755)
    monkeypatch.setenv("OTEL_PERF_OTELCOL_BIN", str(script))
    monkeypatch.setenv(toolchain.BIN_DIR_ENV, str(tmp_path / "cache"))
    calls: list[tuple[str, str]] = []
    assert toolchain.ensure_binary("otelcol", progress=lambda *a: calls.append(a)) == script
    assert calls == [] and not (tmp_path / "cache").exists(), "nothing is built for an override"


# --------------------------------------------------------------------------------------------- (b) binaries


@pytest.fixture(scope="module")
def binaries() -> dict[str, Path]:
    """All four binaries from the cache, built if missing; a failure fails the tests (no skip)."""
    try:
        return toolchain.ensure_binaries()
    except ToolchainError as exc:
        pytest.fail(f"Go binaries could not be provided:\n{exc}", pytrace=False)


def _run(*cmd: str | Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_binaries_are_executables(binaries: dict[str, Path]) -> None:
    assert set(binaries) == set(toolchain.BINARIES)
    for name, path in binaries.items():
        assert path.is_file() and os.access(path, os.X_OK), name
        if not os.environ.get(toolchain.OVERRIDE_ENV[name]):  # type: ignore[index]
            assert path == toolchain.binary_path(name)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_collector_has_every_component(binaries: dict[str, Path]) -> None:
    listing = yaml.safe_load(_run(binaries["otelcol"], "components"))
    types = {
        section: {component["name"] for component in listing.get(section) or []} for section in EXPECTED_TYPES
    }
    assert types == EXPECTED_TYPES
    assert "alertmanager" in types["exporters"] and "groupbytrace" in types["processors"]


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_collector_validates_a_tail_sampling_pipeline(binaries: dict[str, Path], tmp_path: Path) -> None:
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_mib": 256},
            "groupbytrace": {"wait_duration": "2s"},
            "tail_sampling": {"policies": [{"name": "all", "type": "always_sample"}]},
            "filter/alerts": {"error_mode": "ignore", "traces": {"span": ['name != "perf.alert"']}},
            "batch": {},
        },
        "connectors": {"spanmetrics": {}},
        "exporters": {"otlp_grpc": {"endpoint": "127.0.0.1:4317", "tls": {"insecure": True}}, "debug": {}},
        "extensions": {"health_check": {"endpoint": "127.0.0.1:0"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "groupbytrace", "tail_sampling", "batch"],
                    "exporters": ["otlp_grpc", "spanmetrics"],
                },
                "traces/alerts": {
                    "receivers": ["otlp"],
                    "processors": ["filter/alerts"],
                    "exporters": ["debug"],
                },
                "metrics": {"receivers": ["spanmetrics"], "processors": ["batch"], "exporters": ["debug"]},
            },
        },
    }
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump(config))
    _run(binaries["otelcol"], "validate", "--config", path)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_alertmanager_telemetrygen_and_jaeger_run(binaries: dict[str, Path]) -> None:
    assert "alertmanager, version 0.31.1" in _run(binaries["alertmanager"], "--version")
    assert "traces" in _run(binaries["telemetrygen"], "--help")
    assert "jaeger" in _run(binaries["jaeger"], "--help").lower()
