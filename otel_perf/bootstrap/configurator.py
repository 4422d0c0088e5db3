"""The OpenTelemetry configurator: the SDK's standard setup, with trace analysis in front of export.

Through the SDK's own hooks (SDK >= 1.40): `span_processors=` installs the
`TraceAnalysisSpanProcessor` first; `export_span_processor=` builds each exporter's
`BatchSpanProcessor` as usual but connects it behind the analysis processor, so spans are
exported after analysis, with `perf.issue` attributes where flagged. Everything else (exporters,
sampler, resource, metrics, logs) is the SDK's standard `OTEL_*` handling.

The first minute (`startup`, `collector`): one line says otel-perf is on, what it analyses and where
alerts go; a collector that does not answer is said once (not at every export retry), alerts then
print on the console, and exit does not wait for it.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk import _configuration
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_perf.alerting.alert import Sink
from otel_perf.alerting.router import AlertRouter, open_outbox
from otel_perf.alerting.sinks import build_sinks
from otel_perf.bootstrap.collector import CollectorWatch, otlp_endpoints
from otel_perf.bootstrap.self_metrics import register_self_metrics
from otel_perf.bootstrap.startup import helper_process, startup_line
from otel_perf.log_setup import ensure_stderr_logging
from otel_perf.processors.analysis import build_detectors
from otel_perf.processors.findings import FindingsHandler
from otel_perf.processors.monitors import build_watcher
from otel_perf.processors.processor import TraceAnalysisSpanProcessor
from otel_perf.settings import Settings, warn_about_unknown_variables

logger = logging.getLogger("otel_perf.bootstrap")

_configured_pid: int | None = None
_analysis: TraceAnalysisSpanProcessor | None = None  # the processor this process was configured with


def already_configured() -> bool:
    """True once this process was configured (by either launch mode)."""
    return _configured_pid == os.getpid()


class OtelPerfConfigurator(_OTelSDKConfigurator):
    """Selected as the first `opentelemetry_configurator` entry point, or by
    `OTEL_PYTHON_CONFIGURATOR=otel_perf` when another configurator is installed too."""

    def _configure(self, **kwargs: Any) -> None:
        global _configured_pid, _analysis
        if already_configured():
            return
        _configured_pid = os.getpid()
        ensure_stderr_logging()
        setup = None
        try:
            setup = _set_up()
        except Exception:  # otel-perf failing must leave plain OpenTelemetry working
            logger.exception("otel-perf: could not start trace analysis; continuing with plain OpenTelemetry")
        processor = setup.processor if setup is not None else None
        _analysis = processor
        if setup is not None:
            _hook_exports(kwargs, setup)
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]  # the SDK's, untyped
        if setup is None:
            return
        _started(setup)
        if processor is not None and setup.router is not None:
            watcher = processor.watcher
            register_self_metrics(processor.stats, setup.router.stats, watcher.stats if watcher else None)


@dataclass
class _Setup:
    """What otel-perf built for this process, before the SDK builds its providers."""

    settings: Settings
    watch: CollectorWatch
    processor: TraceAnalysisSpanProcessor | None = None
    router: AlertRouter | None = None
    sinks: list[Sink] = field(default_factory=list)


def _set_up() -> _Setup | None:
    """otel-perf's part of this process; None when it is off (`OTEL_PERF_ENABLED=false`, or the
    SDK's own kill switch: its tracer provider then makes no spans, so there is nothing to do)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    settings = Settings.from_env()
    warn_about_unknown_variables(os.environ)
    if not settings.processor.enabled:
        return None
    endpoints = otlp_endpoints(os.environ)
    watch = CollectorWatch(
        endpoints,
        quiet=settings.sinks.quiet,
        analysis_here=settings.processor.analyses_in_process,
        silent=helper_process(),
    )
    setup = _Setup(settings, watch)
    if settings.processor.analyses_in_process:
        # Alerts reach a person through the collector only when they are exported over OTLP: else
        # (and with no file or webhook set) they print here, whatever the collector does.
        through_collector = settings.sinks.otlp and "traces" in endpoints
        console_when = watch.collector_missing if through_collector else _always
        setup.sinks = build_sinks(settings.sinks, console_when=console_when)
        watch.alerts_here = any(
            getattr(sink, "when", None) == watch.collector_missing for sink in setup.sinks
        )
        setup.router = AlertRouter(settings.router, setup.sinks, outbox=open_outbox(settings.router))
        setup.processor = build_processor(settings, setup.router)
    return setup


def _always() -> bool:
    return True


def _hook_exports(kwargs: dict[str, Any], setup: _Setup) -> None:
    """Through the SDK's hooks: each span exporter watched (and, with analysis here, connected
    behind the analysis processor); log exporters watched where the SDK has the hook."""
    processor, watch = setup.processor, setup.watch
    make_export_processor: Callable[[SpanExporter], SpanProcessor] = (
        kwargs.get("export_span_processor") or BatchSpanProcessor
    )

    def export_processor(exporter: SpanExporter) -> SpanProcessor:
        exporter = _tracked(watch, exporter, "traces")
        if processor is None:
            return make_export_processor(exporter)
        processor.add_export_processor(make_export_processor(exporter))
        # The provider gets an inert stand-in: spans reach the exporter through analysis.
        return SpanProcessor()

    if processor is not None:
        kwargs["span_processors"] = [processor, *(kwargs.get("span_processors") or ())]
    kwargs["export_span_processor"] = export_processor
    try:
        hooks = inspect.signature(_configuration._initialize_components).parameters
        if "export_log_record_processor" in hooks:  # SDK 1.45 has it; without, logs go unwatched
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

            make_log_processor = kwargs.get("export_log_record_processor") or BatchLogRecordProcessor

            def export_log_processor(exporter: Any) -> Any:
                return make_log_processor(_tracked(watch, exporter, "logs"))

            kwargs["export_log_record_processor"] = export_log_processor
    except Exception:  # the logs exporter then works unwatched
        logger.debug("otel-perf: could not watch the logs exporter", exc_info=True)


def _tracked(watch: CollectorWatch, exporter: Any, signal: str) -> Any:
    try:
        return watch.track(exporter, signal)
    except Exception:  # unwatched, the exporter still works
        logger.debug("otel-perf: could not watch the %s exporter", signal, exc_info=True)
        return exporter


def _started(setup: _Setup) -> None:
    """After the SDK built its providers: the start-up line, then the collector's watch (its probe,
    the exporters' log filter, the metric exporters, the exit hook that runs before the SDK's)."""
    try:
        if not (setup.settings.sinks.quiet or setup.watch.silent):
            logger.info("%s", startup_line(setup.settings, setup.watch, setup.processor, setup.sinks))
        setup.watch.start()
        from opentelemetry import metrics

        setup.watch.track_metric_readers(metrics.get_meter_provider())
        setup.watch.stop_at_exit()
    except Exception:
        logger.debug("otel-perf: could not watch the collector", exc_info=True)


def after_instrumentation() -> None:
    """The launcher's `opentelemetry_post_instrument` hook: the instrumentations are loaded (so the
    app's SQLAlchemy is imported); watch ORM lazy loads, but only when this process runs otel-perf's
    analysis. The hook runs for every launch that has otel-perf installed, including with
    `OTEL_PERF_ENABLED=false`, `OTEL_SDK_DISABLED=true` or another configurator selected: then it
    does nothing. It never raises (an exception here would abort the launcher's setup)."""
    try:
        if _analysis is not None and already_configured() and _analysis.active:
            _analysis.watch_orm()
    except Exception:
        logger.warning("otel-perf: could not watch SQLAlchemy lazy loads", exc_info=True)


def build_processor(
    settings: Settings, findings: FindingsHandler, *, watch: bool = True
) -> TraceAnalysisSpanProcessor:
    """The analysis processor of `settings`, handing its findings to `findings`; with `watch`, also
    the monitors' watcher (trends, error rates, resources). The configurator's, and the pytest
    plugin's (its own handler, no watcher)."""
    detectors = build_detectors(settings.detectors)
    watcher = (
        build_watcher(settings.monitor, settings.monitors, findings=findings, sample_host=True)
        if watch
        else None
    )
    return TraceAnalysisSpanProcessor(
        settings.processor, detectors=detectors, findings=findings, watcher=watcher
    )
