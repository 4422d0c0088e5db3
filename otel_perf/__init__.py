"""otel-perf: performance monitoring for Python web services, built on OpenTelemetry.

The analysis core (`otel_perf.processors`) knows nothing of alerting; this package, the layer above
it and imported before any of its subpackages, registers the alert router as the handler a span
processor built with no arguments gives its findings to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_perf.processors.findings import register_default_handler

if TYPE_CHECKING:
    from otel_perf.processors.findings import FindingsHandler

__version__ = "0.1.0"


def _alert_router_from_env() -> FindingsHandler:
    # Imported when a processor needs it, not with the package: `import otel_perf` stays light.
    from otel_perf.alerting.router import AlertRouter, RouterSettings, open_outbox
    from otel_perf.alerting.sinks import SinkSettings, build_sinks

    settings = RouterSettings.load()
    return AlertRouter(settings, build_sinks(SinkSettings.load()), outbox=open_outbox(settings))


register_default_handler(_alert_router_from_env)
