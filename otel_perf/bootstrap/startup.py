"""The one line a process configured by otel-perf prints at start-up: that otel-perf is on, what it
analyses, and where alerts go. A new user otherwise sees nothing until the first finding, and can't
tell otel-perf from plain OpenTelemetry, nor where to look for its alerts."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from otel_perf import __version__
from otel_perf.alerting.alert import Sink
from otel_perf.alerting.sinks import ConsoleSink, FileSink, OtlpSink, WebhookSink
from otel_perf.bootstrap.collector import CollectorWatch
from otel_perf.processors.processor import TraceAnalysisSpanProcessor
from otel_perf.settings import Settings

QUIET_HINT = "OTEL_PERF_QUIET=true hides this line"
# Python processes that are not the app but inherit its start-up (the launcher's PYTHONPATH): the
# multiprocessing helpers uvicorn `--workers` and others start beside the workers.
HELPER_PROCESSES = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def helper_process(argv: Sequence[str] | None = None) -> bool:
    """Whether this process is one of `HELPER_PROCESSES` (by its command line, `-c` code included:
    `sys.orig_argv`), which says nothing: one line per process of the app, not per helper."""
    command = " ".join(argv if argv is not None else getattr(sys, "orig_argv", sys.argv))
    return any(helper in command for helper in HELPER_PROCESSES)


def describe_sink(sink: Sink, watch: CollectorWatch) -> str:
    """Where one sink delivers, in a person's words: never a webhook's path (it holds the token)."""
    if isinstance(sink, OtlpSink):
        traces = watch.endpoints.get("traces")
        if traces is None:
            return "no collector (OTLP alerts travel with the traces, which are not exported over OTLP)"
        return f"the collector at {traces.address} (OTLP)"
    if isinstance(sink, FileSink):
        return f"file {sink.path}"
    if isinstance(sink, WebhookSink):
        return f"webhook {sink.host}"
    if isinstance(sink, ConsoleSink):
        conditional = sink.when is not None and sink.when == watch.collector_missing
        return "console while no collector answers" if conditional else "console"
    return str(getattr(sink, "name", type(sink).__name__))


def startup_line(
    settings: Settings,
    watch: CollectorWatch,
    processor: TraceAnalysisSpanProcessor | None,
    sinks: Sequence[Sink],
) -> str:
    """E.g. `otel-perf 0.1.0 on (pid 4242, mode both): analysing traces here for n_plus_one, …;
    watching trend_degradation, …; alerts to the collector at localhost:4317 (OTLP), console while
    no collector answers (OTEL_PERF_QUIET=true hides this line)`."""
    mode = settings.processor.mode
    head = f"otel-perf {__version__} on (pid {os.getpid()}, mode {mode})"
    traces = watch.endpoints.get("traces")
    if processor is None:
        if traces is None:
            return f"{head}: traces are not exported over OTLP, so no analyzer sees them ({QUIET_HINT})"
        return (
            f"{head}: traces go to the collector at {traces.address} for otel-perf's analyzer, which "
            f"sends the alerts ({QUIET_HINT})"
        )
    detectors = [str(detector.name) for detector in getattr(processor, "_detectors", ())]
    parts = [f"analysing traces here for {', '.join(detectors) or 'no detector'}"]
    watcher = processor.watcher
    if watcher is not None and watcher.monitors:
        parts.append("watching " + ", ".join(str(monitor.name) for monitor in watcher.monitors))
    shown = [describe_sink(sink, watch) for sink in sinks]
    parts.append("alerts to " + (", ".join(shown) if shown else "nowhere (every sink is off)"))
    return f"{head}: {'; '.join(parts)} ({QUIET_HINT})"
