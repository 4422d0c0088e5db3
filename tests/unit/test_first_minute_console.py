"""What a person sees first: the console alert (severity, endpoint, code location, fix, trace link;
SQL brackets as written), the alerts table (rich markup escaped), the start-up line (a webhook by
its host only), the one line for a collector that does not answer (the exporters' retry lines
dropped, every other line of theirs kept), and which sinks a developer gets with no setting."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc import StatusCode
from pydantic import SecretStr
from rich.console import Console

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.router import AlertRouter
from otel_perf.alerting.sinks import ConsoleSink, FileSink, OtlpSink, SinkSettings, build_sinks, console_text
from otel_perf.bootstrap.collector import DOWN, UP, CollectorWatch, Endpoint, otlp_endpoints
from otel_perf.bootstrap.configurator import build_processor
from otel_perf.bootstrap.startup import helper_process, startup_line
from otel_perf.processors.findings import Finding, Severity
from otel_perf.render import alerts_table
from otel_perf.settings import Settings, documented_variables

MARKUP = "SELECT [dbo].[orders].[id] FROM [dbo].[orders] WHERE [/] = ? AND x = '[bold red]' \\"
TRACE = "http://localhost:16686/trace/{trace_id}"


def _finding(title: str = f"Slow query {MARKUP} in GET /orders", **details: object) -> Finding:
    return Finding(
        type="slow_span",
        severity=Severity.HIGH,
        service="shop",
        operation="GET /orders",
        title=title,
        fingerprint="1-fp",
        trace_id="cd" * 16,
        details={
            "suggestion": "add an index on [dbo].[orders]([id]) [/]",
            "code_location": {
                "file": os.path.join(os.getcwd(), "app", "orders.py"),
                "line": 7,
                "function": "[bold red]list",
            },
            **details,
        },
    )


# --- markup and the console -------------------------------------------------------------------------


def test_the_alerts_table_shows_markup_in_sql_as_written_and_the_trace_link() -> None:
    console = Console(record=True, width=400)
    console.print(alerts_table([Alert(_finding()).to_json(TRACE)]))
    text = console.export_text()
    assert MARKUP.rstrip(" \\") in text and "'[bold red]'" in text
    assert "add an index on [dbo].[orders]([id]) [/]" in text
    assert "[bold red]list" in text
    assert "trace: http://localhost:16686/trace/" + "cd" * 16 in text


def test_the_console_alert_carries_severity_endpoint_location_fix_and_link() -> None:
    finding = _finding(title="Slow query SELECT [bold]x[/] FROM [orders]")  # the endpoint not in it
    finding.details["suggestion"] = "batch it\nthen \x1b[31mcheck"  # one line each, no escape codes
    lines = console_text(Alert(finding, occurrences=3), TRACE).splitlines()
    assert lines == [
        "otel-perf HIGH Slow query SELECT [bold]x[/] FROM [orders] in GET /orders (×3)",
        "  at app/orders.py:7 in [bold red]list",
        "  fix: batch it then  [31mcheck",
        "  trace: http://localhost:16686/trace/" + "cd" * 16,
    ]


def test_the_console_sink_prints_only_while_its_condition_holds(capsys: pytest.CaptureFixture[str]) -> None:
    showing = [False]
    sink = ConsoleSink(TRACE, when=lambda: showing[0])
    sink.send(Alert(_finding()))
    assert capsys.readouterr().err == ""
    showing[0] = True
    sink.send(Alert(_finding()))
    assert capsys.readouterr().err.startswith(f"otel-perf HIGH Slow query {MARKUP}")


# --- which sinks a developer gets -------------------------------------------------------------------


def _always() -> bool:
    return True


def test_with_no_setting_alerts_print_on_the_console_while_the_condition_holds(tmp_path: Path) -> None:
    [otlp, console] = build_sinks(SinkSettings(), console_when=_always)
    assert isinstance(otlp, OtlpSink) and isinstance(console, ConsoleSink) and console.when is _always
    # A person reads the file or the webhook: the console stays quiet.
    sinks = build_sinks(SinkSettings(file=tmp_path / "alerts.jsonl"), console_when=_always)
    assert not [sink for sink in sinks if isinstance(sink, ConsoleSink)]
    hook = SinkSettings(webhook_url=SecretStr("https://hooks.example.com/T/B/token"))
    assert not [sink for sink in build_sinks(hook, console_when=_always) if isinstance(sink, ConsoleSink)]
    # Said outright, either way.
    assert not [
        s for s in build_sinks(SinkSettings(console=False), console_when=_always) if s.name == "console"
    ]
    [console] = [s for s in build_sinks(SinkSettings(console=True)) if isinstance(s, ConsoleSink)]
    assert console.when is None
    # Without a condition (the analyzer, your own TracerProvider): as before, no console.
    assert [sink.name for sink in build_sinks(SinkSettings())] == ["otlp"]
    for sink in sinks:
        if isinstance(sink, FileSink):
            sink.close()


def test_the_trace_url_and_quiet_settings_have_their_own_names(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {name for name, _, _ in documented_variables()}
    assert {"OTEL_PERF_TRACE_URL", "OTEL_PERF_QUIET", "OTEL_PERF_ALERTS_CONSOLE"} <= names
    assert "OTEL_PERF_ALERTS_TRACE_URL" not in names
    monkeypatch.setenv("OTEL_PERF_TRACE_URL", " " + TRACE + " ")
    monkeypatch.setenv("OTEL_PERF_QUIET", "true")
    settings = SinkSettings.load(strict=True)
    assert settings.trace_url == TRACE and settings.quiet and settings.console is None


# --- the start-up line ------------------------------------------------------------------------------


@pytest.fixture
def watch() -> Iterator[CollectorWatch]:
    yield CollectorWatch({"traces": Endpoint("traces", "grpc", "localhost", 4317)})


def test_the_start_up_line_says_what_runs_and_where_alerts_go_never_a_webhook_token(
    tmp_path: Path, watch: CollectorWatch
) -> None:
    sinks_settings = SinkSettings(
        webhook_url=SecretStr("https://hooks.example.com/services/T0/B0/s3cr3t-token"),
        file=tmp_path / "alerts.jsonl",
    )
    settings = Settings.from_env(sinks=sinks_settings)
    sinks = build_sinks(settings.sinks, console_when=watch.collector_missing)
    router = AlertRouter(settings.router, sinks)
    processor = build_processor(settings, router, watch=False)
    try:
        line = startup_line(settings, watch, processor, sinks)
    finally:
        processor.shutdown()
    assert f"(pid {os.getpid()}, mode both)" in line and "n_plus_one, slow_span" in line
    assert f"alerts to the collector at localhost:4317 (OTLP), file {tmp_path / 'alerts.jsonl'}, " in line
    assert "webhook hooks.example.com" in line and "s3cr3t" not in line and "services" not in line
    assert "OTEL_PERF_QUIET=true" in line and "\n" not in line


def test_the_start_up_line_of_a_collector_mode_app(watch: CollectorWatch) -> None:
    from otel_perf.processors.processor import ProcessorSettings

    settings = Settings.from_env(processor=ProcessorSettings(mode="collector"))
    line = startup_line(settings, watch, None, [])
    assert "mode collector" in line and "the collector at localhost:4317" in line and "analyzer" in line


# --- a collector that does not answer ---------------------------------------------------------------

GRPC_RETRY = "Transient error %s encountered while exporting %s to %s, retrying in %.2fs. Error details: %s"
GRPC_FAILED = "Failed to export %s to %s, error code: %s, error details: %s"
REFUSED = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:4317: Connection refused"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def exporter_log(watch: CollectorWatch) -> Iterator[tuple[logging.Logger, list[str], list[str]]]:
    """A logger watched as the exporters' are; (it, what it let through, what otel-perf said)."""
    exporter = logging.getLogger("tests.first_minute.exporter")
    exporter.propagate = False
    passed, said = _Lines(), _Lines()
    exporter.addHandler(passed)
    ours = logging.getLogger("otel_perf")
    ours.addHandler(said)
    level = ours.level
    ours.setLevel(logging.INFO)
    watch.filter_loggers([exporter.name])
    yield exporter, passed.lines, said.lines
    exporter.removeHandler(passed)
    for item in list(exporter.filters):
        exporter.removeFilter(item)
    ours.removeHandler(said)
    ours.setLevel(level)


def test_no_collector_is_said_once_instead_of_each_retry(
    watch: CollectorWatch, exporter_log: tuple[logging.Logger, list[str], list[str]]
) -> None:
    exporter, passed, said = exporter_log
    for retry in range(5):
        exporter.warning(GRPC_RETRY, StatusCode.UNAVAILABLE, "traces", "localhost:4317", 2.0**retry, REFUSED)
    exporter.error(GRPC_FAILED, "traces", "localhost:4317", StatusCode.UNAVAILABLE, REFUSED)
    exporter.warning("Shutdown in progress, aborting retry.")
    assert passed == [] and watch.state == DOWN
    [line] = said
    assert "no OpenTelemetry collector answers at localhost:4317 (connection refused)" in line
    assert "otel-perf rig up" in line and "OTEL_TRACES_EXPORTER=none" in line
    # Anything else the exporter says still shows: a collector that answers and refuses, …
    exporter.error(GRPC_FAILED, "traces", "localhost:4317", StatusCode.UNAUTHENTICATED, "bad token")
    exporter.warning(GRPC_RETRY, StatusCode.RESOURCE_EXHAUSTED, "traces", "localhost:4317", 1.0, "full")
    exporter.warning("Exporter already shutdown, ignoring call")
    assert len(passed) == 3 and "UNAUTHENTICATED" in passed[0] and "RESOURCE_EXHAUSTED" in passed[1]
    # The collector answers again: said once; a new outage is said again only much later.
    watch.exporter_succeeded()
    watch.exporter_succeeded()
    assert watch.state == UP and said[1:] == [
        "otel-perf: the collector at localhost:4317 answers again; exporting resumed"
    ]
    exporter.warning(GRPC_RETRY, StatusCode.UNAVAILABLE, "traces", "localhost:4317", 1.0, REFUSED)
    assert watch.state == DOWN and len(said) == 2 and len(passed) == 3


def test_an_abandoned_exporter_gives_up_at_once_and_quietly(
    watch: CollectorWatch, exporter_log: tuple[logging.Logger, list[str], list[str]]
) -> None:
    """At exit with no collector: the real OTLP exporter shut down first, its final export fails at
    once, and neither its failure nor the SDK's second shutdown shows."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    inner = OTLPSpanExporter(endpoint="http://127.0.0.1:9", insecure=True)  # never connected
    watched = watch.track(inner, "traces")
    assert watched is not inner and watch.track(object(), "traces") is not None
    _, passed, _ = exporter_log
    grpc_logger = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
    seen = _Lines()
    grpc_logger.addHandler(seen)
    try:
        watch.abandoned = True
        watched.abandon()
        assert watched.export([]) == SpanExportResult.FAILURE
        watched.shutdown()
        assert seen.lines == [] and passed == []
    finally:
        grpc_logger.removeHandler(seen)
        for item in list(grpc_logger.filters):
            if item.name == "otel-perf":
                grpc_logger.removeFilter(item)


def test_otlp_endpoints_are_read_as_the_sdk_reads_them() -> None:
    assert otlp_endpoints({}) == {}
    assert otlp_endpoints({"OTEL_TRACES_EXPORTER": "none"}) == {}
    default = otlp_endpoints({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "console"})
    assert list(default) == ["traces"] and default["traces"].address == "localhost:4317"
    http = otlp_endpoints(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:pw@collector.example:4318/prefix?token=x",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://[::1]:5318/v1/logs",
        }
    )
    assert http["traces"] == Endpoint("traces", "http", "collector.example", 4318)
    assert http["traces"].address == "collector.example:4318"  # never credentials, path or query
    assert http["logs"].address == "[::1]:5318"
    grpc = otlp_endpoints({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:14317"})
    assert grpc["traces"] == Endpoint("traces", "grpc", "collector", 14317)


def test_multiprocessing_helpers_are_not_the_app() -> None:
    python = "/usr/bin/python3"
    assert helper_process([python, "-c", "from multiprocessing.resource_tracker import main;main(7)"])
    worker = "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)"
    assert not helper_process([python, "-c", worker, "--multiprocessing-fork"])
    assert not helper_process([python, "main.py"])


@pytest.mark.parametrize(
    ("value", "level"), [("warn", logging.WARNING), ("ERROR", logging.ERROR), ("", logging.INFO)]
)
def test_otel_log_level_sets_otel_perfs_level(
    value: str, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up line is printed before the app's code runs: the level comes from the environment."""
    from otel_perf.log_setup import ensure_stderr_logging

    ours = logging.getLogger("otel_perf")
    before, handlers, propagate = ours.level, list(ours.handlers), ours.propagate
    monkeypatch.setenv("OTEL_LOG_LEVEL", value)
    try:
        ours.setLevel(logging.NOTSET)
        ensure_stderr_logging()
        assert ours.level == level
    finally:  # as it was: later tests read otel-perf's lines through the root logger (caplog)
        ours.setLevel(before)  # (setLevel, not setattr: it also clears the loggers' level cache)
        ours.handlers[:] = handlers
        ours.propagate = propagate
