"""The analyzer's receivers: both transports and encodings; bad input gets the OTLP-correct error
and the process lives on, losing nothing else."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.support.apps import free_port, wait_until
from tests.support.stack import RunningStack

PROTOBUF = {"Content-Type": "application/x-protobuf"}
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _request(
    service: str, trace_byte: int, *, attribute_size: int = 0, start: int = 0, end: int = 0
) -> bytes:
    attributes = [KeyValue(key="service.name", value=AnyValue(string_value=service))]
    span_attributes = (
        [KeyValue(key="blob", value=AnyValue(string_value="x" * attribute_size))] if attribute_size else []
    )
    now = time.time_ns()
    span = Span(
        trace_id=bytes([trace_byte]) * 16,
        span_id=bytes([trace_byte]) * 8,
        name="GET /ping",
        kind=2,
        start_time_unix_nano=start or now - 10**6,
        end_time_unix_nano=end or now,
        attributes=span_attributes,
    )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(resource=Resource(attributes=attributes), scope_spans=[ScopeSpans(spans=[span])])
        ]
    )
    return request.SerializeToString()


@pytest.fixture
def analyzer_url(stack: RunningStack) -> str:
    return f"http://127.0.0.1:{stack.ports.analyzer(0)[1]}"


def test_http_protobuf_json_and_gzip_are_accepted_and_forwarded(
    stack: RunningStack, analyzer_url: str
) -> None:
    assert (
        httpx.post(f"{analyzer_url}/v1/traces", content=_request("in-proto", 1), headers=PROTOBUF).status_code
        == 200
    )
    compressed = gzip.compress(_request("in-gzip", 2))
    response = httpx.post(
        f"{analyzer_url}/v1/traces", content=compressed, headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "in-json"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "03" * 16,
                                "spanId": "03" * 8,
                                "name": "GET /json",
                                "kind": 2,
                                "startTimeUnixNano": str(time.time_ns() - 10**6),
                                "endTimeUnixNano": str(time.time_ns()),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    response = httpx.post(f"{analyzer_url}/v1/traces", json=document)
    assert response.status_code == 200 and response.json() == {}
    # Forwarded to the collector and on to Jaeger, ids intact.
    for service, trace_hex in (("in-proto", "01" * 16), ("in-gzip", "02" * 16), ("in-json", "03" * 16)):
        traces = wait_until(lambda service=service: stack.jaeger_traces(service), timeout=30, what=service)
        assert traces[0]["traceID"] == trace_hex


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        (b"\x0a\xff\xff\xff", PROTOBUF, 400, "not a valid ExportTraceServiceRequest"),
        (b"{not json", {"Content-Type": "application/json"}, 400, "not JSON"),
        (
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abcd", "spanId": "00" * 8}]}]}]}
            ).encode(),
            {"Content-Type": "application/json"},
            400,
            "traceId must be 32 hex characters",
        ),
        (
            json.dumps({"resourceSpans": "nope"}).encode(),
            {"Content-Type": "application/json"},
            400,
            "not a valid",
        ),
        (b"\x00", {"Content-Type": "text/plain"}, 415, "Content-Type must be"),
        (b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}, 400, "invalid gzip"),
        # Not read as if it were uncompressed: the sender is told what to send instead.
        (
            b"\x1b\x00\x00",
            {**PROTOBUF, "Content-Encoding": "br"},
            415,
            "Content-Encoding 'br' is not supported",
        ),
        ((b"[" * 100_000) + (b"]" * 100_000), {"Content-Type": "application/json"}, 400, "nested too deeply"),
    ],
)
def test_malformed_http_input_gets_the_otlp_error(
    analyzer_url: str, body: bytes, headers: dict, status: int, needle: str
) -> None:
    response = httpx.post(f"{analyzer_url}/v1/traces", content=body, headers=headers)
    assert response.status_code == status
    if response.headers["content-type"].startswith("application/json"):
        message = response.json()["message"]
        assert response.json()["code"] == code_pb2.INVALID_ARGUMENT
    else:
        decoded = status_pb2.Status.FromString(response.content)
        message = decoded.message
        assert decoded.code == code_pb2.INVALID_ARGUMENT
    assert needle in message
    assert httpx.get(f"{analyzer_url}/healthz").status_code == 200


def test_oversized_request_is_refused_before_it_is_read(analyzer_url: str) -> None:
    response = httpx.post(f"{analyzer_url}/v1/traces", content=b"\x00" * (33 * 1024 * 1024), headers=PROTOBUF)
    assert response.status_code == 413


def test_a_chunked_request_is_refused_while_it_streams(stack: RunningStack, analyzer_url: str) -> None:
    """No Content-Length to refuse it by: the body is counted as it arrives, and refused once it
    passes the limit (32 MiB), not read whole first (a 300 MB chunked POST reached 757 MB RSS)."""

    def body() -> Iterator[bytes]:
        chunk = b"\x00" * (1024 * 1024)
        for _ in range(300):
            yield chunk

    pid = int((stack.stack.state_dir / "analyzer-1.pid").read_text())
    peak_before = _peak_rss_mb(pid)
    try:
        response = httpx.post(f"{analyzer_url}/v1/traces", content=body(), headers=PROTOBUF, timeout=60)
        assert response.status_code == 413
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the analyzer answered 413 and closed while the client was still sending
    grown = _peak_rss_mb(pid) - peak_before
    assert grown < 100, f"the analyzer's peak RSS grew {grown:.0f} MB on a refused 300 MB body"
    assert httpx.get(f"{analyzer_url}/healthz").status_code == 200
    assert (
        httpx.post(f"{analyzer_url}/v1/traces", content=_request("after", 9), headers=PROTOBUF).status_code
        == 200
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_grpc_errors_and_pathological_spans(stack: RunningStack, analyzer_url: str) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{stack.ports.analyzer(0)[0]}")
    export = channel.unary_unary(TRACE_EXPORT)
    with pytest.raises(grpc.RpcError) as error:
        export(b"\x0a\xff\xff", timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Absurd timestamps (end before start, year 2500) and a 10 MB attribute: accepted, no crash.
    export(_request("weird-times", 7, start=16_725_225_600 * 10**9, end=10**9), timeout=5)
    export(_request("big-attribute", 8, attribute_size=10 * 1024 * 1024), timeout=30)
    channel.close()
    wait_until(lambda: stack.jaeger_trace("07" * 16), timeout=30, what="the odd-timestamp trace in Jaeger")
    wait_until(lambda: stack.jaeger_trace("08" * 16), timeout=30, what="the 10 MB-attribute trace in Jaeger")
    assert httpx.get(f"{analyzer_url}/healthz").status_code == 200
    metrics = httpx.get(f"{analyzer_url}/metrics").text
    assert "otel_perf_analyzer_rejected_bad_request_total" in metrics


def test_health_readiness_and_metrics_endpoints(analyzer_url: str) -> None:
    assert httpx.get(f"{analyzer_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{analyzer_url}/readyz").json()["status"] == "ready"
    metrics = httpx.get(f"{analyzer_url}/metrics").text
    for name in (
        "otel_perf_analyzer_spans_received_total",
        "otel_perf_analyzer_traces_analysed_total",
        "otel_perf_analyzer_alerts_sent_total",
        "otel_perf_analyzer_buffered_spans",
        "otel_perf_analyzer_export_queue",
    ):
        assert name in metrics


def test_a_trace_that_never_stops_receiving_spans_is_not_held_for_ever(
    fresh_stack: Callable[..., RunningStack],
) -> None:
    """The analyzer sits in the path to Jaeger and holds a trace until it goes quiet: one that keeps
    receiving spans (a long stream, senders stuck in a loop) is analysed and forwarded after the
    maximum hold all the same, while its spans still arrive. The senders don't wait for each other
    (each reply waits for its request's delivery, which waits for the trace)."""
    stack = fresh_stack(analyzer_env={"OTEL_PERF_ANALYZER_MAX_TRACE_HOLD_S": "2"})
    url = f"http://127.0.0.1:{stack.ports.analyzer(0)[1]}/v1/traces"
    trace_id = bytes.fromhex("5e" * 16)
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="streamer"))])
    arrived_while_sending = None
    started = time.monotonic()
    senders = ThreadPoolExecutor(64)  # replies wait for the trace: never a pause in its spans
    replies = []
    for number in range(1, 80):
        now = time.time_ns()
        span = Span(
            trace_id=trace_id,
            span_id=number.to_bytes(8, "big"),
            name="chunk",
            kind=1,
            start_time_unix_nano=now - 10**6,
            end_time_unix_nano=now,
        )
        request = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=[span])])]
        )
        payload = request.SerializeToString()
        replies.append(senders.submit(lambda body=payload: httpx.post(url, content=body, headers=PROTOBUF)))
        if number % 10 == 0 and time.monotonic() - started > 3:
            arrived_while_sending = stack.jaeger_trace(trace_id.hex())
            if arrived_while_sending:
                break
        time.sleep(0.1)
    senders.shutdown()
    assert arrived_while_sending, "the trace reached Jaeger only once its spans stopped"
    assert {reply.result().status_code for reply in replies} == {200}
    assert stack.analyzer_metric(0, "otel_perf_analyzer_traces_timed_out") >= 1


def test_a_dead_forward_target_fills_a_queue_bounded_in_bytes(
    fresh_stack: Callable[..., RunningStack],
) -> None:
    """The analyzer's way back to the collector is dead: requests queue up to the byte bound, then
    the analyzer answers 503 (the collector keeps what it can't send in its own queue); readiness
    turns false before that; memory stays bounded (40 of 8 MB to a dead target took RSS from 67 to
    428 MB while /readyz said ready)."""
    stack = fresh_stack(
        analyzer_env={
            "OTEL_PERF_ANALYZER_EXPORT_ENDPOINT": f"127.0.0.1:{free_port()}",
            "OTEL_PERF_ANALYZER_EXPORT_QUEUE_BYTES": str(40 * 1024 * 1024),
        }
    )
    base = f"http://127.0.0.1:{stack.ports.analyzer(0)[1]}"
    pid = int((stack.stack.state_dir / "analyzer-1.pid").read_text())
    peak_before = _peak_rss_mb(pid)
    statuses, ready = [], []
    for number in range(40):
        body = _request("big", number + 1, attribute_size=8 * 1024 * 1024)
        statuses.append(
            httpx.post(f"{base}/v1/traces", content=body, headers=PROTOBUF, timeout=30).status_code
        )
        ready.append(httpx.get(f"{base}/readyz").status_code)
    assert statuses[:4] == [200] * 4, statuses
    assert 503 in statuses, statuses  # refused, retryable, once the queue holds its bytes
    first_refused, first_unready = statuses.index(503), ready.index(503)
    assert first_unready < first_refused, (statuses, ready)  # not ready before it refuses
    grown = _peak_rss_mb(pid) - peak_before
    assert grown < 250, f"peak RSS grew {grown:.0f} MB for a 40 MB queue"
    assert httpx.get(f"{base}/healthz").status_code == 200
