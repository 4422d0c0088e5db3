"""Days of request traffic as OTLP JSON lines (the collector file exporter's format), for
`otel-perf analyze` tests and demos of the monitors: one server span per request (with `mount`, the
mount's server span and the sub-application's internal span under it, as FastAPI's instrumentation
gives them), latencies lognormal around a daily cycle, with a version rollout that may make an
operation slower or failing.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

HOUR_NS = 3600 * 10**9
_STATUS_ERROR = 2
_KIND_INTERNAL = 1
_KIND_SERVER = 2


@dataclass(frozen=True)
class Operation:
    """One endpoint's traffic: its median latency, and what the new version does to it."""

    name: str
    median_ms: float
    slower_after_release: float = 1.0  # latency factor once the new version serves
    error_rate: float = 0.0
    error_rate_after_release: float | None = None


@dataclass(frozen=True)
class Traffic:
    service: str = "shop"
    start_ns: int = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
    hours: int = 24 * 10
    requests_per_hour: int = 60  # per operation
    release_at_hour: int | None = 24 * 8
    versions: tuple[str, str] = ("1.4.0", "1.5.0")
    mount: str | None = None  # e.g. "/api": every operation served by a sub-app mounted there
    daily_amplitude: float = 0.3  # ± latency over the day (busy afternoons)
    sigma: float = 0.4
    seed: int = 7
    operations: tuple[Operation, ...] = field(
        default_factory=lambda: (
            Operation("GET /orders/{order_id}", 40, slower_after_release=1.6),
            Operation("POST /orders", 60, error_rate=0.005, error_rate_after_release=0.12),
            Operation("GET /health", 2),
        )
    )


def requests(traffic: Traffic) -> Iterator[tuple[Operation, str, int, int, bool]]:
    """(operation, version, start ns, duration ns, failed) per request, in time order per hour."""
    rng = random.Random(traffic.seed)
    for hour in range(traffic.hours):
        released = traffic.release_at_hour is not None and hour >= traffic.release_at_hour
        version = traffic.versions[1] if released else traffic.versions[0]
        cycle = 1 + traffic.daily_amplitude * math.sin(2 * math.pi * ((hour % 24) - 9) / 24)
        for operation in traffic.operations:
            factor = cycle * (operation.slower_after_release if released else 1.0)
            error_rate = operation.error_rate
            if released and operation.error_rate_after_release is not None:
                error_rate = operation.error_rate_after_release
            for _ in range(traffic.requests_per_hour):
                start = traffic.start_ns + hour * HOUR_NS + rng.randrange(HOUR_NS - 10**10)
                duration_ms = operation.median_ms * factor * rng.lognormvariate(0, traffic.sigma)
                yield operation, version, start, int(duration_ms * 1e6), rng.random() < error_rate


def otlp_json_lines(traffic: Traffic, per_line: int = 500) -> Iterator[str]:
    """The requests as OTLP JSON lines of `per_line` spans, grouped by version (resource)."""
    rng = random.Random(traffic.seed + 1)
    batch: dict[str, list[dict[str, object]]] = {}
    count = 0
    for operation, version, start, duration, failed in requests(traffic):
        method, route = operation.name.split(" ", 1)
        span: dict[str, object] = {
            "traceId": f"{rng.getrandbits(128):032x}",
            "spanId": f"{rng.getrandbits(64):016x}",
            "name": operation.name,
            "kind": _KIND_SERVER,
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(start + duration),
            "attributes": [{"key": "http.route", "value": {"stringValue": route}}],
            "status": {"code": _STATUS_ERROR} if failed else {},
        }
        spans = [span]
        if traffic.mount:
            mounted = {**span, "spanId": f"{rng.getrandbits(64):016x}", "parentSpanId": span["spanId"]}
            mounted["kind"] = _KIND_INTERNAL
            span["name"] = f"{method} {traffic.mount}"
            span["attributes"] = [{"key": "http.route", "value": {"stringValue": traffic.mount}}]
            spans.append(mounted)
        batch.setdefault(version, []).extend(spans)
        count += len(spans)
        if count >= per_line:
            yield _line(traffic.service, batch)
            batch, count = {}, 0
    if batch:
        yield _line(traffic.service, batch)


def _line(service: str, by_version: dict[str, list[dict[str, object]]]) -> str:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": service}},
                            {"key": "service.version", "value": {"stringValue": version}},
                        ]
                    },
                    "scopeSpans": [{"scope": {"name": "traffic"}, "spans": spans}],
                }
                for version, spans in by_version.items()
            ]
        }
    )
