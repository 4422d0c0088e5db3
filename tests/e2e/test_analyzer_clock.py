"""Span time can't move time-driven state. Live, a real `otel-perf analyzer` receives spans from a
sender whose clock is wrong (a year ahead, a year behind, at 0, at 2**63): it can't silence a later
correct-clock alert (cooldown), and its requests count in the window they arrive in, not in windows
of their own. Replaying (`otel-perf analyze`), one absurdly dated trace among days of traffic
neither closes every window at once nor crashes the replay: the alerts are those of the traffic
without it, and the trace is named once."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from benchmarks.detection.traffic import Traffic, otlp_json_lines
from otel_perf.processors.tree import FirstRequests, within_skew
from tests.support.analyzer import OTEL_PERF, Analyzer
from tests.support.apps import wait_until

YEAR_NS = 365 * 86400 * 10**9
MS = 10**6
WRONG_CLOCKS: dict[str, Callable[[], int]] = {
    "a-year-ahead": lambda: time.time_ns() + YEAR_NS,
    "a-year-behind": lambda: time.time_ns() - YEAR_NS,
    "at-zero": lambda: 0,
    "at-2-63": lambda: 2**63,
}


def _attributes(**values: str) -> list[KeyValue]:
    return [KeyValue(key=key, value=AnyValue(string_value=value)) for key, value in values.items()]


def _n_plus_one(
    service: str, trace_byte: int, now_ns: int, *, failed: bool = False, repeats: int = 6
) -> bytes:
    """One request (server span) with `repeats` identical queries one after another."""
    trace_id = trace_byte.to_bytes(16, "big")
    root_id = (1).to_bytes(8, "big")
    spans = [
        Span(
            trace_id=trace_id,
            span_id=root_id,
            name="GET /orders",
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now_ns,
            end_time_unix_nano=now_ns + (repeats + 1) * 3 * MS,
            attributes=_attributes(**{"http.route": "/orders"}),
            status=Status(code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_UNSET),
        )
    ]
    for number in range(repeats):
        start = now_ns + MS + number * 3 * MS
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=(number + 2).to_bytes(8, "big"),
                parent_span_id=root_id,
                name="SELECT shop",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + 2 * MS,
                attributes=_attributes(
                    **{"db.system": "sqlite", "db.statement": f"SELECT * FROM customers WHERE id = {number}"}
                ),
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_attributes(**{"service.name": service})),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    return request.SerializeToString()


@pytest.fixture
def analyzer(tmp_path: Path) -> Iterator[Callable[..., Analyzer]]:
    started: list[Analyzer] = []

    def start(**env: str) -> Analyzer:
        started.append(Analyzer(tmp_path / f"analyzer{len(started)}", env))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def test_a_wrong_clock_cannot_silence_a_later_alert(analyzer: Callable[..., Analyzer]) -> None:
    """Cooldown 2 s: a finding dated a year ahead, routed at that date, would hold its cooldown for a
    year; bounded by the receive time (skew 1 s), the same finding from a correct clock 3 s later
    alerts again. One service per wrong clock, so each has its own fingerprint."""
    running = analyzer(OTEL_PERF_ALERTS_COOLDOWN_S="2", OTEL_PERF_ALERTS_MAX_CLOCK_SKEW_S="1")
    for number, (name, clock) in enumerate(WRONG_CLOCKS.items(), start=1):
        running.send(_n_plus_one(name, number, clock()))
    wait_until(
        lambda: len(running.alerts("n_plus_one")) == len(WRONG_CLOCKS), timeout=20, what="the first alerts"
    )
    time.sleep(3)
    for number, name in enumerate(WRONG_CLOCKS, start=100):
        running.send(_n_plus_one(name, number, time.time_ns()))
    wait_until(
        lambda: len(running.alerts("n_plus_one")) == 2 * len(WRONG_CLOCKS),
        timeout=20,
        what=f"a second alert per service, got {running.alerts('n_plus_one')}",
    )
    by_service: dict[str, int] = {}
    for alert in running.alerts("n_plus_one"):
        by_service[alert["service"]] = by_service.get(alert["service"], 0) + 1
    assert by_service == {name: 2 for name in WRONG_CLOCKS}
    log = running.stop()
    assert "Traceback" not in log, log


def test_wrong_clock_requests_count_in_the_window_they_arrive_in(analyzer: Callable[..., Analyzer]) -> None:
    """Error rate over 3 s windows, judged from 20 requests: 10 failing requests from correct
    clocks and 10 from wrong ones, sent within one window, make one error-rate alert. Dated by their
    own clocks, the wrong ones would open windows of their own (a year away, at 0, past what the
    state file can hold), leave the real window short of requests, and alert nothing."""
    running = analyzer(
        OTEL_PERF_MONITOR_WINDOW_S="3",
        OTEL_PERF_MONITOR_LATENESS_S="0.5",
        OTEL_PERF_MONITOR_FLUSH_INTERVAL_S="0.2",
        OTEL_PERF_MONITOR_MAX_CLOCK_SKEW_S="1",
        OTEL_PERF_ERROR_RATE_MIN_REQUESTS="20",
        OTEL_PERF_ERROR_RATE_MIN_ERRORS="5",
        OTEL_PERF_N_PLUS_ONE_ENABLED="false",
        OTEL_PERF_TREND_ENABLED="false",
        OTEL_PERF_RESOURCE_ENABLED="false",
    )
    # Start at the beginning of a window, so that all twenty fall in it.
    wait_until(lambda: time.time() % 3 < 0.5, timeout=5, interval=0.02, what="a window's start")
    clocks = [*WRONG_CLOCKS.values()] * 3
    for number in range(10):
        running.send(_n_plus_one("errors", 200 + number, clocks[number](), failed=True, repeats=1))
        running.send(_n_plus_one("errors", 300 + number, time.time_ns(), failed=True, repeats=1))
    alerts = wait_until(lambda: running.alerts("error_rate"), timeout=20, what="the error-rate alert")
    assert len(alerts) == 1 and alerts[0]["service"] == "errors", alerts
    assert alerts[0]["details"]["requests"] == 20, alerts[0]["details"]
    log = running.stop()
    assert "Traceback" not in log and "watching windows failed" not in log, log


def test_a_wrong_clock_cannot_keep_background_work_filed_as_start_up() -> None:
    """The analyzer's record of each service's first request is bounded like the rest: requests
    dated a year ahead (the only sender of requests has a wrong clock) don't file every bare query
    from a correct clock as start-up work for a year; ten minutes on, they are background work."""
    clock = [time.time_ns()]
    bounded = FirstRequests(within_skew(lambda: clock[0], 300))
    unbounded = FirstRequests()
    for first in (bounded, unbounded):
        first.saw("shop", clock[0] + YEAR_NS)
    clock[0] += 600 * 10**9
    for first in (bounded, unbounded):
        first.saw("shop", clock[0] + YEAR_NS)
    assert bounded.operation("shop", clock[0]) == "background"
    assert unbounded.operation("shop", clock[0]) == "startup"  # what the bound prevents


# --- replay ---------------------------------------------------------------------------------------

REPLAYED = Traffic(hours=24 * 3, release_at_hour=24 * 2)
REPLAY_ENV = {"OTEL_PERF_TREND_SEASON_S": "0"}


def _absurd_line(end_ns: int) -> str:
    """One request of a replayed operation, dated `end_ns`, as an OTLP JSON line."""
    span = {
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
        "name": REPLAYED.operations[0].name,
        "kind": 2,
        "startTimeUnixNano": str(max(0, end_ns - 5 * MS)),
        "endTimeUnixNano": str(end_ns),
        "status": {"code": 2},
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": REPLAYED.service}}]}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]})


def _replay(path: Path, state_home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
        "XDG_STATE_HOME": str(state_home),
        **REPLAY_ENV,
    }
    return subprocess.run(
        [OTEL_PERF, "analyze", "--no-summary", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _kinds(stdout: str) -> list[tuple[str, str, str]]:
    alerts = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return sorted((alert["type"], alert["operation"], alert.get("time", "")) for alert in alerts)


@pytest.fixture(scope="module")
def traffic_lines() -> list[str]:
    return list(otlp_json_lines(REPLAYED))


@pytest.fixture(scope="module")
def baseline(
    traffic_lines: list[str], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[str, str, str]]:
    root = tmp_path_factory.mktemp("replay-baseline")
    path = root / "traffic.jsonl"
    path.write_text("\n".join(traffic_lines) + "\n")
    done = _replay(path, root)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    kinds = _kinds(done.stdout)
    assert {kind for kind, _, _ in kinds} >= {"trend_degradation", "error_rate"}, kinds
    return kinds


@pytest.mark.parametrize(
    "end_ns", [7_258_118_400 * 10**9, 0, 2**63, 2**64 - 1], ids=["year-2200", "zero", "2-63", "2-64-1"]
)
def test_one_absurd_timestamp_does_not_move_the_replay_clock(
    end_ns: int, traffic_lines: list[str], baseline: list[tuple[str, str, str]], tmp_path: Path
) -> None:
    lines = list(traffic_lines)
    lines.insert(len(lines) // 3, _absurd_line(end_ns))
    path = tmp_path / "traffic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = _replay(path, tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert _kinds(done.stdout) == baseline
    named = [line for line in done.stderr.splitlines() if "dated far from the rest" in line]
    assert len(named) == 1 and named[0].count("1 trace(s)") == 1, done.stderr
