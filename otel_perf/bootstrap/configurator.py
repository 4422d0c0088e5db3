"""The OpenTelemetry configurator: the SDK's standard setup, with trace analysis in front of export.

Through the SDK's own hooks (SDK >= 1.40): `span_processors=` installs the
`TraceAnalysisSpanProcessor` first; `export_span_processor=` builds each exporter's
`BatchSpanProcessor` as usual but connects it behind the analysis processor, so spans are
exported after analysis, with `perf.issue` attributes where flagged. Everything else (exporters,
sampler, resource, metrics, logs) is the SDK's standard `OTEL_*` handling.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_perf.alerting.router import AlertRouter, open_outbox
from otel_perf.alerting.sinks import build_sinks
from otel_perf.bootstrap.self_metrics import register_self_metrics
from otel_perf.log_setup import ensure_stderr_logging
from otel_perf.processors.analysis import build_detectors
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
        processor = router = None
        try:
            built = _build_analysis()
            if built is not None:
                processor, router = built
        except Exception:  # otel-perf failing must leave plain OpenTelemetry working
            logger.exception("otel-perf: could not start trace analysis; continuing with plain OpenTelemetry")
        _analysis = processor
        if processor is not None:
            make_export_processor = kwargs.get("export_span_processor") or BatchSpanProcessor

            def export_after_analysis(exporter: SpanExporter) -> SpanProcessor:
                processor.add_export_processor(make_export_processor(exporter))
                # The provider gets an inert stand-in: spans reach the exporter through analysis.
                return SpanProcessor()

            kwargs["span_processors"] = [processor, *(kwargs.get("span_processors") or ())]
            kwargs["export_span_processor"] = export_after_analysis
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]  # the SDK's, untyped
        if processor is not None and router is not None:
            watcher = processor.watcher
            register_self_metrics(processor.stats, router.stats, watcher.stats if watcher else None)


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


def _build_analysis() -> tuple[TraceAnalysisSpanProcessor, AlertRouter] | None:
    """The analysis processor and the alert router it hands findings to, each with its own settings;
    None when analysis is off in this process."""
    # The SDK's own kill switch: its tracer provider then makes no spans, so nothing to analyse.
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    settings = Settings.from_env()
    warn_about_unknown_variables(os.environ)
    if not settings.processor.analyses_in_process:
        return None
    router = AlertRouter(settings.router, build_sinks(settings.sinks), outbox=open_outbox(settings.router))
    processor = TraceAnalysisSpanProcessor(
        settings.processor,
        detectors=build_detectors(settings.detectors),
        findings=router,
        watcher=build_watcher(settings.monitor, settings.monitors, findings=router, sample_host=True),
    )
    return processor, router
