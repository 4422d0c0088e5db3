"""Monitors: what watches an operation over time (latency trends, error rates) and the resources
it runs on (CPU, memory, disk, connection pools), beside the detectors that read one trace. A new
monitor is one module here plus one line in `REGISTRY`.

The composed settings take the monitors' sections from here, and every host builds its `Watcher`
with `build_watcher`: nothing else lists monitors.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from otel_perf.processors.config import Section
from otel_perf.processors.findings import FindingsHandler
from otel_perf.processors.monitors.base import Monitor
from otel_perf.processors.monitors.error_rate import ErrorRateMonitor, ErrorRateSettings
from otel_perf.processors.monitors.resources import HostSampler, ResourceMonitor, ResourceSettings
from otel_perf.processors.monitors.trend import TrendMonitor, TrendSettings
from otel_perf.processors.monitors.watcher import MonitorSettings, Watcher

# name → (monitor class, its settings section); the name is the section's key in the settings.
REGISTRY: dict[str, tuple[type[Monitor], type[Section]]] = {
    "trend_degradation": (TrendMonitor, TrendSettings),
    "error_rate": (ErrorRateMonitor, ErrorRateSettings),
    "resource": (ResourceMonitor, ResourceSettings),
}


def build_watcher(
    settings: MonitorSettings | None = None,
    sections: Mapping[str, Section] | None = None,
    findings: FindingsHandler | None = None,
    *,
    replay: bool = False,
    sample_host: bool = False,
) -> Watcher | None:
    """The watcher with every enabled monitor (each with its section from `sections` by registry
    name, else from the environment); None when watching is off or no monitor is enabled.
    `sample_host`: sample this host's CPU, memory and disk and the app's pools (in-process only;
    the analyzer reads resources from the metrics apps send)."""
    settings = settings or MonitorSettings.load()
    if not settings.enabled:
        return None
    monitors: list[Monitor] = []
    windows: dict[str, float] = {}
    sampler = None
    for name, (monitor_class, section_class) in REGISTRY.items():
        section = (sections or {}).get(name) or section_class.load()
        if not getattr(section, "enabled", True):
            continue
        window_s = float(getattr(section, "window_s", settings.window_s))
        windows[monitor_class.kind] = window_s
        monitors.append(monitor_class(section, window_s))
        if sample_host and isinstance(section, ResourceSettings) and not replay:
            sampler = HostSampler(section, socket.gethostname()).samples
    if not monitors:
        return None
    return Watcher(settings, monitors, findings, replay=replay, windows=windows, sampler=sampler)


__all__ = ["REGISTRY", "Monitor", "MonitorSettings", "Watcher", "build_watcher"]
