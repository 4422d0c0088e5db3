"""Figure 10: the analyzer's memory under hostile load, from a real `otel-perf analyzer` process.

- `largest`: one OTLP/gRPC request just under the 32 MiB default limit, of ~340k small spans
  (34k traces of 10); the process's peak (`VmHWM`) and its RSS once the request went on, and again
  after it settled.
- `dead-forward`: 8 MB requests while the forward target is dead, the export queue bounded at
  40 MiB: accepted until the byte bound, then UNAVAILABLE.
- `flood`: small requests (20 traces of 11 spans) from several threads for a while, as fast as the
  analyzer takes them; RSS sampled throughout.
- `cache`: the SQL/URL normaliser caches, in this process: 40 distinct 5 MB statements, then
  many more distinct statements and URLs than fit; the bytes they hold (tracemalloc) against their
  byte bounds.

    python -m benchmarks.analyzer_memory [--scenarios largest,dead-forward,flood,cache]
"""

from __future__ import annotations

import argparse
import gc
import re
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from benchmarks.common import emit, machine
from benchmarks.otlp_load import requests as load_requests
from benchmarks.processes import analyzer, free_port, sink_collector

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MIB = 1024 * 1024
DEFAULT_LIMIT = 32 * MIB


def memory_mib(pid: int) -> dict[str, float]:
    """The process's peak RSS (`VmHWM`) and RSS now (`VmRSS`), MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(rest.split()[0]) / 1024
    return values


def small_spans_request(spans: int, spans_per_trace: int = 10, seed: int = 0) -> bytes:
    """One request of `spans` small spans (~85 bytes each encoded, no attributes): a server span and
    its internal children per trace, no finding anywhere (the cost is the spans, not alerts)."""
    now = time.time_ns()
    built = []
    base = seed * 10**9
    for number in range(spans):
        trace, position = divmod(number, spans_per_trace)
        root = trace * spans_per_trace + 1
        built.append(
            Span(
                trace_id=(base + trace + 1).to_bytes(16, "big"),
                span_id=(base + number + 1).to_bytes(8, "big"),
                parent_span_id=(base + root).to_bytes(8, "big") if position else b"",
                name=f"render fragment {position:02d}/{spans_per_trace}"
                if position
                else "GET /catalog/items",
                kind=1 if position else 2,
                start_time_unix_nano=now - 2_000_000 + position,
                end_time_unix_nano=now - 1_000_000 - position,
            )
        )
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="bulk"))])
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=built)])]
    )
    return request.SerializeToString()


def metric(http_port: int, name: str) -> float:
    """A counter or gauge of the analyzer's /metrics, summed over its labels."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
    values = re.findall(rf"^{name}(?:_total)?(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return sum(float(value) for value in values)


def _settled(http_port: int, timeout_s: float = 60) -> None:
    """Until nothing is held for analysis or queued towards the collector."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (
            metric(http_port, "otel_perf_analyzer_buffered_spans") == 0
            and metric(http_port, "otel_perf_analyzer_export_queue") == 0
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the analyzer still holds spans after {timeout_s:.0f} s")


def _channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)],
    )


def largest(
    workdir: Path,
    spans: int,
    settle_s: float,
    spans_per_trace: int = 10,
    http: bool = False,
    concurrent: int = 1,
    **env: str,
) -> dict[str, Any]:
    """`concurrent` requests of `spans` small spans each, as large as the limit allows, at once
    (`http`: OTLP/HTTP, else gRPC)."""
    payloads = [small_spans_request(spans, spans_per_trace, seed=number) for number in range(concurrent)]
    payload = payloads[0]
    if len(payload) > DEFAULT_LIMIT:
        raise ValueError(f"{spans} spans encode to {len(payload)} bytes, over the 32 MiB limit")
    with (
        sink_collector(workdir) as (sink_port, _),
        analyzer(workdir, sink_port, **env) as (grpc_port, http_port, process),
    ):
        time.sleep(1)
        before = memory_mib(process.pid)
        started = time.monotonic()

        def send(body: bytes) -> str:
            if http:
                response = httpx.post(
                    f"http://127.0.0.1:{http_port}/v1/traces",
                    content=body,
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=120,
                )
                return str(response.status_code)
            channel = _channel(grpc_port)
            try:
                channel.unary_unary(EXPORT)(body, timeout=120)
                return "OK"
            except grpc.RpcError as error:
                return str(error.code().name)
            finally:
                channel.close()

        with ThreadPoolExecutor(concurrent) as senders:
            answers = list(senders.map(send, payloads))
        answered_s = time.monotonic() - started
        _settled(http_port)
        done = memory_mib(process.pid)
        time.sleep(settle_s)
        after = memory_mib(process.pid)
        analysed = metric(http_port, "otel_perf_analyzer_traces_analysed")
        unanalysed = metric(http_port, "otel_perf_analyzer_spans_unanalysed")
    return {
        "request_mib": len(payload) / MIB,
        "spans": spans,
        "spans_per_trace": spans_per_trace,
        "concurrent": concurrent,
        "answers": answers,
        "transport": "http" if http else "grpc",
        "answered_s": answered_s,
        "traces_analysed": analysed,
        "spans_unanalysed": unanalysed,
        "rss_before_mib": before["VmRSS"],
        "peak_mib": done["VmHWM"],
        "peak_over_before_mib": done["VmHWM"] - before["VmRSS"],
        "rss_settled_mib": done["VmRSS"],
        "rss_after_mib": after["VmRSS"],
        "rss_after_over_before_mib": after["VmRSS"] - before["VmRSS"],
    }


def dead_forward(workdir: Path, requests: int) -> dict[str, Any]:
    """8 MB requests to an analyzer whose forward target is dead, its queue bounded at 40 MiB."""
    attribute = KeyValue(key="blob", value=AnyValue(string_value="x" * 8 * MIB))
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="big"))])
    statuses = []
    env = {"OTEL_PERF_ANALYZER_EXPORT_QUEUE_BYTES": str(40 * MIB)}
    with analyzer(workdir, free_port(), **env) as (_, http_port, process):
        time.sleep(1)
        before = memory_mib(process.pid)
        for number in range(requests):
            span = Span(
                trace_id=(number + 1).to_bytes(16, "big"),
                span_id=(number + 1).to_bytes(8, "big"),
                name="GET /upload",
                kind=2,
                start_time_unix_nano=time.time_ns() - 10**6,
                end_time_unix_nano=time.time_ns(),
                attributes=[attribute],
            )
            body = ExportTraceServiceRequest(
                resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=[span])])]
            ).SerializeToString()
            statuses.append(
                httpx.post(
                    f"http://127.0.0.1:{http_port}/v1/traces",
                    content=body,
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=30,
                ).status_code
            )
        after = memory_mib(process.pid)
    return {
        "requests": requests,
        "accepted": statuses.count(200),
        "refused_503": statuses.count(503),
        "rss_before_mib": before["VmRSS"],
        "peak_mib": after["VmHWM"],
        "peak_over_before_mib": after["VmHWM"] - before["VmRSS"],
        "rss_after_mib": after["VmRSS"],
    }


def flood(
    workdir: Path,
    seconds: float,
    threads: int,
    in_flight: int = 16,
    spans_per_request: int = 0,
    settle_s: float = 2.0,
) -> dict[str, Any]:
    """Small requests (20 traces of 11 spans, ~30 KB; or `spans_per_request` small spans each) from
    `threads` threads for `seconds`, each thread keeping `in_flight` requests open (a reply waits
    for the request's delivery, ~0.25 s): as many as the analyzer takes. UNAVAILABLE counts as
    refused and the next one goes."""
    if spans_per_request:
        payloads = [small_spans_request(spans_per_request, seed=number) for number in range(8)]
    else:
        payloads = load_requests(40, n_plus_one_share=0.2)
    with (
        sink_collector(workdir) as (sink_port, _),
        analyzer(workdir, sink_port) as (grpc_port, http_port, process),
    ):
        time.sleep(1)
        before = memory_mib(process.pid)
        stop = time.monotonic() + seconds
        sent = [0] * threads
        refused = [0] * threads
        samples: list[float] = []

        def send(index: int) -> None:
            channel = _channel(grpc_port)
            export = channel.unary_unary(EXPORT)
            pending: deque[grpc.Future] = deque()
            number = index

            def settle(call: grpc.Future) -> None:
                try:
                    call.result()
                    sent[index] += 1
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    refused[index] += 1

            while time.monotonic() < stop:
                if len(pending) >= in_flight:
                    settle(pending.popleft())
                pending.append(export.future(payloads[number % len(payloads)], timeout=60))
                number += threads
            while pending:
                settle(pending.popleft())
            channel.close()

        senders = [threading.Thread(target=send, args=(index,)) for index in range(threads)]
        for sender in senders:
            sender.start()
        while any(sender.is_alive() for sender in senders):
            samples.append(memory_mib(process.pid)["VmRSS"])
            time.sleep(0.5)
        for sender in senders:
            sender.join()
        during = memory_mib(process.pid)
        _settled(http_port)
        time.sleep(settle_s)
        after = memory_mib(process.pid)
        spans = metric(http_port, "otel_perf_analyzer_spans_received")
    return {
        "seconds": seconds,
        "threads": threads,
        "in_flight_per_thread": in_flight,
        "request_kib": sum(map(len, payloads)) / len(payloads) / 1024,
        "requests_accepted": sum(sent),
        "requests_refused_503": sum(refused),
        "spans_received": spans,
        "spans_per_second": spans / seconds,
        "rss_before_mib": before["VmRSS"],
        "rss_max_sampled_mib": max(samples, default=during["VmRSS"]),
        "peak_mib": during["VmHWM"],
        "peak_over_before_mib": during["VmHWM"] - before["VmRSS"],
        "rss_after_mib": after["VmRSS"],
    }


def cache(distinct: int) -> dict[str, Any]:
    """The normaliser caches in this process: 40 distinct 5 MB statements, then `distinct` more
    distinct statements, URLs and cache commands than fit; bytes held measured by tracemalloc."""
    from otel_perf.processors.normalize import CACHES, cache_command_template, normalize_sql, url_template

    for budget in CACHES.values():
        budget.clear()
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for number in range(40):
        statement = f"INSERT INTO audit_{number} (id, note) VALUES " + "(1, 'x'), " * 500_000
        normalize_sql(statement, "postgresql")
    del statement
    gc.collect()
    after_big = tracemalloc.get_traced_memory()[0] - start
    for number in range(distinct):
        token = uuid.UUID(int=number).hex
        url_template(f"https://api.example.com/v2/{token}/files/{number}-{token}?s={token}" + "x" * 600)
        normalize_sql(f"SELECT * FROM t WHERE id = {number} AND note = '{token}' /* {'y' * 1400} */")
        cache_command_template(f"SET session:{token} {'z' * 400}")
    gc.collect()
    after_fill = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    return {
        "held_after_40_statements_of_5mb_mib": after_big / MIB,
        "held_after_fill_mib": after_fill / MIB,
        "bound_mib": sum(budget.maxsize for budget in CACHES.values()) / MIB,
        "counted": {name: budget.currsize / MIB for name, budget in CACHES.items()},
        "entries": {name: len(budget) for name, budget in CACHES.items()},
    }


SCENARIOS = ("largest", "dead-forward", "flood", "cache")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--spans", type=int, default=340_000, help="largest: spans in the request")
    parser.add_argument("--spans-per-trace", type=int, default=10, help="largest: spans per trace")
    parser.add_argument("--http", action="store_true", help="largest: send over OTLP/HTTP, not gRPC")
    parser.add_argument("--concurrent", type=int, default=1, help="largest: that many requests at once")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the reading after")
    parser.add_argument("--dead-forward-requests", type=int, default=40)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    parser.add_argument("--flood-threads", type=int, default=4)
    parser.add_argument("--flood-in-flight", type=int, default=16, help="flood: open requests per thread")
    parser.add_argument("--flood-spans", type=int, default=0, help="flood: small spans per request")
    parser.add_argument("--cache-distinct", type=int, default=12_000)
    args = parser.parse_args(argv)
    chosen = args.scenarios.split(",")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "largest" in chosen:
            result["largest"] = largest(
                workdir, args.spans, args.settle, args.spans_per_trace, args.http, args.concurrent
            )
        if "dead-forward" in chosen:
            result["dead_forward"] = dead_forward(workdir, args.dead_forward_requests)
        if "flood" in chosen:
            result["flood"] = flood(
                workdir,
                args.flood_seconds,
                args.flood_threads,
                args.flood_in_flight,
                args.flood_spans,
                args.settle,
            )
        if "cache" in chosen:
            result["cache"] = cache(args.cache_distinct)
    emit("analyzer_memory", machine=machine(), **result)
    return result


if __name__ == "__main__":
    main()
