"""Figure 2: request overhead on a real FastAPI + SQLAlchemy endpoint served by uvicorn.

The demo shop's `/orders` (26 queries: a list and 25 lazy loads) under load from a separate
process, three ways: uninstrumented; OpenTelemetry only (`opentelemetry-instrument` with
`OTEL_PERF_ENABLED=false`); OpenTelemetry + otel-perf (the shipped defaults). The instrumented
variants export over OTLP to a real (sink) collector. Latency p50/p99 and throughput per variant,
interleaved rounds, medians; otel-perf is compared with OpenTelemetry only.

    python -m benchmarks.request_overhead [--seconds 10 --rounds 3 --concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from benchmarks.common import emit, machine, median
from benchmarks.processes import base_env, free_port, sink_collector, start, stop, wait_for_http
from otel_perf.demo.runner import APP_SOURCE

VARIANTS = ("uninstrumented", "otel_only", "otel_perf")


def load(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    """Closed-loop load: `concurrency` clients each sending the next request when one returns."""
    latencies: list[float] = []

    async def client(deadline: float) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await http.get(url)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "requests_per_second": len(latencies) / elapsed,
    }


def _load_process(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    """The load generator in its own process, so it doesn't share the app's GIL."""
    code = (
        "import json, sys; from benchmarks.request_overhead import load; "
        f"print(json.dumps(load({url!r}, {seconds}, {concurrency})))"
    )
    output = (
        __import__("subprocess")
        .run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        .stdout
    )
    return json.loads(output.strip().splitlines()[-1])


def run_variant(
    variant: str, workdir: Path, sink_port: int, seconds: float, concurrency: int, extra: dict[str, str]
) -> dict[str, float]:
    port = free_port()
    env = {
        **base_env(),
        "PORT": str(port),
        "OTEL_SERVICE_NAME": "bench-shop",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_PERF_ALERTS_FILE": str(workdir / "alerts.jsonl"),
    }
    argv = [sys.executable, "main.py"]
    if variant != "uninstrumented":
        argv = [str(Path(sys.executable).parent / "opentelemetry-instrument"), *argv]
    if variant == "otel_only":
        env["OTEL_PERF_ENABLED"] = "false"
    elif variant == "otel_perf":
        env.update(extra)
    process = start(argv, env, workdir / f"{variant}.log", cwd=workdir)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        url = f"http://127.0.0.1:{port}/orders"
        _load_process(url, 2, concurrency)  # warm up
        return _load_process(url, seconds, concurrency)
    finally:
        stop(process)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OTEL_PERF_X=VALUE",
        help="a setting for the otel-perf variant (repeatable)",
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    figures: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        shutil.copy(APP_SOURCE, workdir / "main.py")
        __import__("subprocess").run(
            [sys.executable, "-c", "import main; main.seed()"],
            cwd=workdir,
            check=True,
            env={**base_env(), "PORT": "0"},
        )
        with sink_collector(workdir) as (sink_port, _):
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    figures[variant].append(
                        run_variant(variant, workdir, sink_port, args.seconds, args.concurrency, extra)
                    )
    result: dict[str, float] = {}
    for variant in VARIANTS:
        for key in ("p50_ms", "p99_ms", "requests_per_second"):
            result[f"{variant}_{key}"] = median([run[key] for run in figures[variant]])
    result["otel_perf_vs_otel_p50"] = result["otel_perf_p50_ms"] / result["otel_only_p50_ms"]
    result["otel_perf_vs_otel_p99"] = result["otel_perf_p99_ms"] / result["otel_only_p99_ms"]
    result["otel_perf_vs_otel_throughput"] = (
        result["otel_perf_requests_per_second"] / result["otel_only_requests_per_second"]
    )
    result["otel_vs_uninstrumented_throughput"] = (
        result["otel_only_requests_per_second"] / result["uninstrumented_requests_per_second"]
    )
    emit(
        "request_overhead",
        machine=machine(),
        seconds=args.seconds,
        rounds=args.rounds,
        concurrency=args.concurrency,
        endpoint="/orders (26 queries)",
        **result,
    )
    return result


if __name__ == "__main__":
    main()
