"""Figure 3: collector-side analyzer throughput from OTLP protobuf, against the collector alone.

The same pre-built load (realistic request traces, `benchmarks.otlp_load`) is sent over OTLP/gRPC
as fast as 4 client threads can, once to the analyzer (which analyses every trace and forwards
everything to a sink collector) and once straight to the sink collector; each target's own CPU
time gives its spans per second per core. Interleaved rounds; medians.

    python -m benchmarks.analyzer_throughput [--requests 300 --rounds 3 --n-plus-one-share 0.2]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx

from benchmarks.common import emit, machine, median
from benchmarks.otlp_load import requests
from benchmarks.processes import analyzer, cpu_seconds, sink_collector

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def send_all(port: int, payloads: list[bytes], threads: int = 4) -> float:
    """Seconds to deliver every payload (each retried while the target answers UNAVAILABLE)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    export = channel.unary_unary(EXPORT)

    def send(payload: bytes) -> None:
        while True:
            try:
                export(payload, timeout=30)
                return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(0.01)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, payloads))
    elapsed = time.perf_counter() - started
    channel.close()
    return elapsed


def _metric(http_port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
    match = re.search(rf"^{name}_total ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _at_least_a_tick(cpu_s: float) -> float:
    """Process CPU time is counted in clock ticks (10 ms): a tiny smoke run can measure 0."""
    return max(cpu_s, 0.01)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="OTLP requests of 20 traces each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-plus-one-share", type=float, default=0.2)
    args = parser.parse_args(argv)
    payloads = requests(args.requests, n_plus_one_share=args.n_plus_one_share)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = sum(
        len(ExportTraceServiceRequest.FromString(p).resource_spans[0].scope_spans[0].spans) for p in payloads
    )
    analyzer_rates, collector_rates, analyzer_wall = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with (
            sink_collector(workdir) as (sink_port, sink),
            analyzer(workdir, sink_port, OTEL_PERF_ANALYZER_TRACE_WAIT_MS="50") as (
                grpc_port,
                http_port,
                process,
            ),
        ):
            send_all(grpc_port, payloads[:10])  # warm up
            for _ in range(args.rounds):
                forwarded = _metric(http_port, "otel_perf_analyzer_forwarded")
                cpu_before = cpu_seconds(process.pid)
                started = time.perf_counter()
                send_all(grpc_port, payloads)
                while _metric(http_port, "otel_perf_analyzer_forwarded") < forwarded + len(payloads):
                    time.sleep(0.01)
                analyzer_wall.append(time.perf_counter() - started)
                analyzer_rates.append(spans / _at_least_a_tick(cpu_seconds(process.pid) - cpu_before))
                cpu_before = cpu_seconds(sink.pid)
                send_all(sink_port, payloads)
                time.sleep(0.5)  # the batch processor's queue drains
                collector_rates.append(spans / _at_least_a_tick(cpu_seconds(sink.pid) - cpu_before))
            analysed = _metric(http_port, "otel_perf_analyzer_traces_analysed")
    result = {
        "spans_per_round": spans,
        "analyzer_spans_per_cpu_second": median(analyzer_rates),
        "collector_spans_per_cpu_second": median(collector_rates),
        "analyzer_to_collector_ratio": median(analyzer_rates) / median(collector_rates),
        "analyzer_wall_spans_per_second": spans / median(analyzer_wall),
        "traces_analysed": analysed,
    }
    emit(
        "analyzer_throughput",
        machine=machine(),
        requests=args.requests,
        rounds=args.rounds,
        n_plus_one_share=args.n_plus_one_share,
        **result,
    )
    return result


if __name__ == "__main__":
    main()
