"""otel-perf's own counters as OpenTelemetry metrics, exported with the app's: what was held and
analysed, what was exported unanalysed (a bound was hit) or skipped, by reason, alerts sent and
suppressed, sink failures. The processor's counters are named after its stats fields
(`PROCESSOR_COUNTERS`: `traces_analysed` → `otel_perf.traces.analysed`), as the analyzer's are
in its Prometheus `/metrics`."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from otel_perf.alerting.router import RouterStats
from otel_perf.processors import failsafe
from otel_perf.processors.monitors.watcher import WatcherStats
from otel_perf.processors.processor import PROCESSOR_COUNTERS, ProcessorStats


def _observe(
    read: Callable[[], int | dict[str, int]], label: str = ""
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_: CallbackOptions) -> Iterable[Observation]:
        value = read()
        if isinstance(value, dict):
            return [Observation(count, {label: key}) for key, count in value.items()]
        return [Observation(value)]

    return callback


def _stat(stats: ProcessorStats, field: str) -> Callable[[], int | dict[str, int]]:
    def read() -> int | dict[str, int]:
        value: int | dict[str, int] = getattr(stats, field)
        return dict(value) if isinstance(value, dict) else value

    return read


def register_self_metrics(
    stats: ProcessorStats, router: RouterStats, watcher: WatcherStats | None = None
) -> None:
    meter = metrics.get_meter("otel_perf")
    # name: (read, label, unit, description)
    counters: dict[str, tuple[Callable[[], int | dict[str, int]], str, str, str]] = {
        "otel_perf." + counter.field.replace("_", ".", 1): (
            _stat(stats, counter.by_reason or counter.field),
            "reason" if counter.by_reason else "",
            counter.unit,
            counter.description,
        )
        for counter in PROCESSOR_COUNTERS
    }
    counters.update(
        {
            "otel_perf.alerts.sent": (lambda: router.sent, "", "{alert}", "Alerts delivered to the sinks."),
            "otel_perf.alerts.suppressed": (
                lambda: (
                    router.suppressed_duplicate + router.suppressed_rate_limit + router.suppressed_severity
                ),
                "",
                "{finding}",
                "Findings not alerted: duplicate in cooldown, rate limit, or below the minimum severity.",
            ),
            "otel_perf.sink.failures": (
                lambda: dict(router.sink_failures),
                "sink",
                "{failure}",
                "Failed alert deliveries.",
            ),
            "otel_perf.hook.failures": (
                lambda: dict(failsafe.failures),
                "hook",
                "{failure}",
                "Exceptions inside otel-perf's hooks in application code, contained (never raised).",
            ),
        }
    )
    if watcher is not None:
        counters.update(
            {
                "otel_perf.monitor.requests": (
                    lambda: watcher.requests,
                    "",
                    "{request}",
                    "Requests counted into the trend and error-rate windows.",
                ),
                "otel_perf.monitor.dropped": (
                    lambda: {
                        "max_pending": watcher.dropped_pending,
                        "late": watcher.dropped_late,
                        "max_series": watcher.dropped_series,
                    },
                    "reason",
                    "{request}",
                    "Requests and samples the monitors could not count, by reason.",
                ),
                "otel_perf.monitor.windows_judged": (
                    lambda: watcher.windows_judged,
                    "",
                    "{window}",
                    "Windows this process sealed and judged (another worker judges the rest).",
                ),
            }
        )
    for name, (read, label, unit, description) in counters.items():
        meter.create_observable_counter(
            name, callbacks=[_observe(read, label)], unit=unit, description=description
        )
