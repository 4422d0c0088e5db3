"""Resources: CPU, memory and disk of the host, and the SQLAlchemy connection pools of the app,
sustained over a window (never one sample).

Samples are utilisations in percent, taken every `OTEL_PERF_MONITOR_FLUSH_INTERVAL_S` by the
in-process watcher (psutil, the source the system-metrics instrumentation reads; pools from the
engines the app connected with) or read by the analyzer from the system metrics apps export.
A window alerts when its mean reaches the resource's level (the teams' own monitors had CPU 80 %,
memory 85 %, disk 90 %, pools 80 %; critical from 95 %), and resolves when a window's mean falls
back under 90 % of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors import orm
from otel_perf.processors.config import Section
from otel_perf.processors.findings import FIRING, Finding, Severity, fingerprint
from otel_perf.processors.monitors.base import State, iso, resolution, series_finding
from otel_perf.processors.monitors.windows import RESOURCE, SeriesKey, Window

logger = logging.getLogger("otel_perf.monitors")

TYPE = "resource"
CPU, MEMORY, DISK, DB_POOL = "cpu", "memory", "disk", "db_pool"
_NAMES = {CPU: "CPU", MEMORY: "Memory", DISK: "Disk", DB_POOL: "Connection pool"}


class ResourceSettings(Section):
    """`OTEL_PERF_RESOURCE_*`: when CPU, memory, disk or a connection pool becomes a `resource` alert."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_RESOURCE_")
    ascending: ClassVar[tuple[tuple[str, ...], ...]] = tuple(
        (name, "critical_percent")
        for name in ("cpu_percent", "memory_percent", "disk_percent", "pool_percent")
    )

    enabled: bool = Field(True, description="Watch CPU, memory, disk and SQLAlchemy connection pools.")
    window_s: float = Field(
        300, gt=0, description="Utilisation is judged by its mean over windows this long."
    )
    cpu_percent: float = Field(80, gt=0, le=100, description="Alert when the host's CPU averaged this much.")
    memory_percent: float = Field(85, gt=0, le=100, description="…its memory in use.")
    disk_percent: float = Field(90, gt=0, le=100, description="…the disk holding `disk_path`, full.")
    pool_percent: float = Field(
        80, gt=0, le=100, description="…a connection pool's checked-out share of pool_size + max_overflow."
    )
    critical_percent: float = Field(95, gt=0, le=100, description="Any of them critical from this much.")
    min_samples: int = Field(3, ge=1, description="Windows with fewer samples are not judged.")
    disk_path: str = Field("/", description="The filesystem whose fullness is watched.")

    def level(self, resource: str) -> float:
        return {
            CPU: self.cpu_percent,
            MEMORY: self.memory_percent,
            DISK: self.disk_percent,
            DB_POOL: self.pool_percent,
        }.get(resource, 100.0)


def series_name(resource: str, host: str, target: str = "") -> str:
    """`cpu on web-1`, `disk / on web-1`, `db_pool postgresql://db/shop on web-1`."""
    return f"{resource} {target} on {host}" if target else f"{resource} on {host}"


class ResourceMonitor:
    name: ClassVar[str] = TYPE
    kind: ClassVar[str] = RESOURCE

    def __init__(self, settings: ResourceSettings | None = None, window_s: float = 300) -> None:
        self.settings = settings or ResourceSettings()
        self.window_s = window_s

    def evaluate(
        self, key: SeriesKey, history: Sequence[Window], state: State | None
    ) -> tuple[list[Finding], State | None]:
        config = self.settings
        window = history[-1]
        tally = window.total
        if tally.count < config.min_samples:
            return [], state
        resource = key.operation.split(" ", 1)[0]
        level = config.level(resource)
        mean = tally.mean
        details: dict[str, object] = {
            "resource": resource,
            "mean_percent": round(mean, 1),
            "max_percent": round(tally.quantile(1.0), 1),
            "threshold_percent": level,
            "samples": tally.count,
            "window_start": iso(window.start_ns),
            "window_s": self.window_s,
        }
        label = _NAMES.get(resource, resource)
        if state is not None and state.get("status") == FIRING:
            if mean >= level * 0.9:
                return [], state
            resolved = resolution(
                TYPE,
                key,
                window,
                state,
                title=f"{label} back to {mean:.0f} % ({key.operation}) (resolved)",
                details=details,
                summary=f"{resource} utilisation",
            )
            return [resolved], None
        if mean < level:
            return [], None
        details["status"] = FIRING
        finding = series_finding(
            TYPE,
            key,
            window,
            severity=Severity.CRITICAL if mean >= config.critical_percent else Severity.HIGH,
            title=f"{label} at {mean:.0f} % for {self.window_s:g} s ({key.operation}; threshold {level:g} %)",
            fingerprint=fingerprint(TYPE, key.service, key.operation, iso(window.start_ns)),
            details=details,
            summary=f"{resource} utilisation",
        )
        return [finding], {"status": FIRING, "fingerprint": finding.fingerprint}


class HostSampler:
    """Utilisation samples of this process's host and its SQLAlchemy pools: (series name, percent)."""

    def __init__(self, settings: ResourceSettings, host: str) -> None:
        self.settings = settings
        self.host = host
        self._disk_failed = False
        try:
            import psutil
        except ImportError:  # the system-metrics instrumentation brings it; without it, pools only
            logger.info("otel-perf: psutil is not installed; CPU, memory and disk are not watched")
            self._psutil = None
        else:
            self._psutil = psutil
            psutil.cpu_percent(interval=None)  # the first reading is meaningless: it starts the count

    def samples(self) -> list[tuple[str, float]]:
        host = self.host
        taken: list[tuple[str, float]] = []
        psutil = self._psutil
        if psutil is not None:
            taken.append((series_name(CPU, host), float(psutil.cpu_percent(interval=None))))
            taken.append((series_name(MEMORY, host), float(psutil.virtual_memory().percent)))
            try:
                disk = float(psutil.disk_usage(self.settings.disk_path).percent)
            except OSError as error:
                if not self._disk_failed:  # a wrong path, said once rather than watched silently never
                    self._disk_failed = True
                    logger.warning(
                        "otel-perf: OTEL_PERF_RESOURCE_DISK_PATH=%r can't be read (%s); "
                        "the disk is not watched",
                        self.settings.disk_path,
                        error.strerror or error,
                    )
            else:
                taken.append((series_name(DISK, host, self.settings.disk_path), disk))
        for pool, checked_out, capacity in orm.pool_usage():
            taken.append((series_name(DB_POOL, host, pool), 100.0 * checked_out / capacity))
        return taken


# What the analyzer reads from the metrics apps export (system-metrics instrumentation, or the
# collector's hostmetrics receiver): utilisations as fractions, by state.
_CPU_METRIC = "system.cpu.utilization"
_MEMORY_METRIC = "system.memory.utilization"
_FILESYSTEM_METRIC = "system.filesystem.utilization"


def samples_from_metrics(request: Any) -> list[tuple[str, str, float, int]]:
    """(service, series name, percent, time ns) from an OTLP `ExportMetricsServiceRequest`: CPU in
    use (1 - mean idle over the CPUs), memory in use, and the fullest filesystem, per resource."""
    taken: list[tuple[str, str, float, int]] = []
    for resource_metrics in request.resource_metrics:
        attributes = {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}
        service = attributes.get("service.name") or "unknown_service"
        host = attributes.get("host.name") or attributes.get("service.instance.id") or service
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name not in (_CPU_METRIC, _MEMORY_METRIC, _FILESYSTEM_METRIC):
                    continue
                points = metric.gauge.data_points if metric.HasField("gauge") else metric.sum.data_points
                by_state: dict[str, list[float]] = {}
                time_ns = 0
                for point in points:
                    labels = {kv.key: kv.value.string_value for kv in point.attributes}
                    state = (
                        labels.get("state")
                        or labels.get("system.cpu.state")
                        or labels.get("system.memory.state")
                        or ""
                    )
                    value = point.as_double if point.HasField("as_double") else float(point.as_int)
                    by_state.setdefault(state, []).append(value)
                    time_ns = max(time_ns, point.time_unix_nano)
                if metric.name == _CPU_METRIC and by_state.get("idle"):
                    idle = by_state["idle"]
                    taken.append(
                        (service, series_name(CPU, host), 100.0 * (1 - sum(idle) / len(idle)), time_ns)
                    )
                elif metric.name == _MEMORY_METRIC and by_state.get("used"):
                    taken.append((service, series_name(MEMORY, host), 100.0 * max(by_state["used"]), time_ns))
                elif metric.name == _FILESYSTEM_METRIC and by_state.get("used"):
                    taken.append((service, series_name(DISK, host), 100.0 * max(by_state["used"]), time_ns))
    # NaN or infinite values (or finite ones whose sum overflows) are no utilisation: a sketch can't
    # hold them, and the watcher's thread failed on each one.
    return [sample for sample in taken if math.isfinite(sample[2])]
