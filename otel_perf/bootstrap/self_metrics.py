"""otel-perf's own counters as OpenTelemetry metrics, exported with the app's: what was analysed,
what was exported unanalysed (a bound was hit), alerts sent and suppressed, sink failures."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from otel_perf.alerting.router import RouterStats
from otel_perf.processors import failsafe
from otel_perf.processors.processor import ProcessorStats


def _observe(
    read: Callable[[], int | dict[str, int]], label: str = ""
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        value = read()
        if isinstance(value, dict):
            return [Observation(count, {label: key}) for key, count in value.items()]
        return [Observation(value)]

    return callback


def register_self_metrics(stats: ProcessorStats, router: RouterStats) -> None:
    meter = metrics.get_meter("otel_perf")
    counters: dict[str, tuple[Callable[[], Any], str, str]] = {
        "otel_perf.traces.analysed": (lambda: stats.traces_analysed, "", "Traces analysed in-process."),
        "otel_perf.spans.analysed": (lambda: stats.spans_analysed, "", "Spans analysed in-process."),
        "otel_perf.spans.unanalysed": (
            lambda: stats.spans_unanalysed,
            "",
            "Spans exported without analysis (a bound was hit, or late).",
        ),
        "otel_perf.traces.skipped": (
            lambda: stats.traces_skipped,
            "",
            "Traces not analysed in-process (CPU share or max_traces).",
        ),
        "otel_perf.findings": (lambda: stats.findings, "", "Findings produced by detectors."),
        "otel_perf.export.waits_timed_out": (
            lambda: stats.export_waits_timed_out,
            "",
            "Hand-overs to an exporter whose queue stayed full past OTEL_PERF_EXPORT_WAIT_S.",
        ),
        "otel_perf.alerts.sent": (lambda: router.sent, "", "Alerts delivered to the sinks."),
        "otel_perf.alerts.suppressed": (
            lambda: router.suppressed_duplicate + router.suppressed_rate_limit + router.suppressed_severity,
            "",
            "Findings not alerted: duplicate in cooldown, rate limit, or below the minimum severity.",
        ),
        "otel_perf.sink.failures": (lambda: dict(router.sink_failures), "sink", "Failed alert deliveries."),
        "otel_perf.hook.failures": (
            lambda: dict(failsafe.failures),
            "hook",
            "Exceptions inside otel-perf's hooks in application code, contained (never raised).",
        ),
    }
    for name, (read, label, description) in counters.items():
        meter.create_observable_counter(name, callbacks=[_observe(read, label)], description=description)
