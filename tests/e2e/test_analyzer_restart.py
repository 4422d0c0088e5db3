"""The analyzer sits in the path to Jaeger: killed mid-traffic, or down for a while, it must not
lose a trace. The collector keeps every request in its persistent sending queue until the analyzer
acknowledges it, and the analyzer acknowledges only once the request is back in the collector."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.otlp_load import requests
from tests.support.apps import wait_until
from tests.support.stack import RunningStack

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Traces held 1.5 s before analysis: a kill always finds some accepted and not yet forwarded.
SLOW_ANALYZER = {"OTEL_PERF_ANALYZER_TRACE_WAIT_MS": "1500"}


def _spans_per_trace(payloads: list[bytes]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for payload in payloads:
        request = ExportTraceServiceRequest.FromString(payload)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    counts[span.trace_id.hex()] += 1
    return dict(counts)


def _send(running: RunningStack, payloads: list[bytes], interval_s: float) -> None:
    """To the collector, as an app's exporter would, one request every `interval_s`."""
    with grpc.insecure_channel(f"127.0.0.1:{running.ports.otlp_grpc}") as channel:
        export = channel.unary_unary(TRACE_EXPORT)
        for payload in payloads:
            export(payload, timeout=10)
            time.sleep(interval_s)


def _missing_from_jaeger(running: RunningStack, expected: dict[str, int]) -> dict[str, str]:
    """Trace id → what Jaeger lacks ('absent' or 'n of m spans')."""
    missing = {}
    for trace_id, count in expected.items():
        trace = running.jaeger_trace(trace_id)
        if trace is None:
            missing[trace_id] = "absent"
        elif len(trace["spans"]) < count:
            missing[trace_id] = f"{len(trace['spans'])} of {count} spans"
    return missing


def _all_in_jaeger(running: RunningStack, expected: dict[str, int], timeout_s: float) -> dict[str, str]:
    missing = dict(expected)
    deadline = time.monotonic() + timeout_s
    while missing and time.monotonic() < deadline:
        still = _missing_from_jaeger(running, {trace_id: expected[trace_id] for trace_id in missing})
        missing = still
        if missing:
            time.sleep(1)
    return missing


def _kill(running: RunningStack, name: str) -> None:
    service = running.stack.service(name)
    pid = int(service.pid_path(running.stack.state_dir).read_text())
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: running.stack.status()[_index(running, name)].pid is None, timeout=10)


def _index(running: RunningStack, name: str) -> int:
    return [service.name for service in running.stack.services()].index(name)


def _collector_metric(running: RunningStack, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{running.ports.collector_telemetry}/metrics", timeout=5).text
    values = [
        float(value) for value in re.findall(rf"^{name}(?:_total)?(?:\{{[^}}]*\}})? ([0-9.e+]+)$", text, re.M)
    ]
    return sum(values)


def test_an_analyzer_killed_mid_traffic_loses_no_trace_and_alerts_once(
    fresh_stack: Callable[..., RunningStack],
) -> None:
    running = fresh_stack(analyzer_env=SLOW_ANALYZER)
    payloads = requests(60, traces_per_request=4, n_plus_one_share=0.3, seed=11)
    expected = _spans_per_trace(payloads)
    sender = threading.Thread(target=_send, args=(running, payloads, 0.1))
    sender.start()
    time.sleep(2.5)  # mid-traffic, with traces accepted and held for analysis
    held_before_kill = running.analyzer_metric(0, "otel_perf_analyzer_buffered_traces")
    _kill(running, "analyzer-1")
    time.sleep(1.5)
    running.stack.start_service("analyzer-1")
    sender.join()

    missing = _all_in_jaeger(running, expected, timeout_s=60)
    assert held_before_kill > 0, "the kill must find traces held in the analyzer"
    assert not missing, f"{len(missing)} of {len(expected)} traces lost: {dict(list(missing.items())[:5])}"

    # The restarted analyzer analysed what the collector sent again: each N+1 is alerted, once
    # (its outbox, on disk, knew what the killed one had already sent).
    def n_plus_ones() -> Counter[str]:
        return Counter(
            alert["fingerprint"] for alert in running.analyzer_alerts() if alert["type"] == "n_plus_one"
        )

    wait_until(lambda: n_plus_ones(), timeout=20)
    time.sleep(3)  # a duplicate would arrive within a delivery cycle
    alerted = n_plus_ones()
    assert alerted and set(alerted.values()) == {1}, alerted


def test_an_analyzer_down_for_a_while_gets_everything_when_it_returns(
    fresh_stack: Callable[..., RunningStack],
) -> None:
    running = fresh_stack()
    _kill(running, "analyzer-1")
    payloads = requests(40, traces_per_request=3, n_plus_one_share=0.3, seed=12)
    expected = _spans_per_trace(payloads)
    _send(running, payloads, 0.25)  # 10 s of traffic with no analyzer
    wait_until(lambda: _collector_metric(running, "otelcol_exporter_queue_size") > 0, timeout=10)
    assert _missing_from_jaeger(running, dict(list(expected.items())[:3])), "nothing bypasses the analyzer"

    running.stack.start_service("analyzer-1")
    missing = _all_in_jaeger(running, expected, timeout_s=60)
    assert not missing, f"{len(missing)} of {len(expected)} traces lost: {dict(list(missing.items())[:5])}"


def test_beyond_the_collector_queue_bound_what_is_dropped_is_counted(
    fresh_stack: Callable[..., RunningStack],
) -> None:
    running = fresh_stack(collector_env={"OTEL_PERF_ANALYZER_QUEUE_SPANS": "2500"})
    _kill(running, "analyzer-1")
    payloads = requests(60, traces_per_request=4, n_plus_one_share=0.5, seed=13)  # ~4400 spans
    _send(running, payloads, 0.05)
    wait_until(lambda: _collector_metric(running, "otelcol_exporter_enqueue_failed_spans") > 0, timeout=20)
