"""Each benchmark runs end to end (tiny sizes): they stay runnable. Their figures are not judged
here: timing on a shared CI machine would only make the suite flaky (see BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from benchmarks import (
    analyzer_memory,
    analyzer_throughput,
    detection_latency,
    request_overhead,
    scaling,
    span_overhead,
)


def test_span_overhead_runs() -> None:
    result = span_overhead.main(["--trees", "20", "--rounds", "1"])
    assert result["cpu_us_per_span_sdk"] > 0 and result["cpu_ratio_otel_perf"] > 0


def test_request_overhead_runs() -> None:
    result = request_overhead.main(["--seconds", "0.5", "--rounds", "1", "--concurrency", "2"])
    assert result["otel_perf_requests_per_second"] > 0 and result["uninstrumented_requests_per_second"] > 0


def test_analyzer_throughput_runs() -> None:
    result = analyzer_throughput.main(["--requests", "5", "--rounds", "1"])
    assert result["traces_analysed"] >= 100  # every trace sent, warm-up included, was analysed


def test_scaling_runs_and_stays_linear() -> None:
    result = scaling.main(["--max-spans", "1000", "--flood-traces", "3000"])
    flood = result["flood"]
    assert flood["within_bounds"] and flood["spans_sent"] == 30_000
    for shape in ("bushy", "wide", "deep"):
        assert set(result[f"{shape}_us_per_span"]) == {10, 100, 1000}


@pytest.mark.timeout(120)
def test_detection_latency_runs() -> None:
    result = detection_latency.main(["--samples", "2"])
    assert result["in_process_p50_ms"] >= result["in_process_grace_ms"]
    assert result["collector_side_p50_ms"] >= result["analyzer_trace_wait_ms"]


@pytest.mark.timeout(120)
def test_analyzer_memory_runs() -> None:
    result = analyzer_memory.main(
        [
            "--spans",
            "20000",
            "--settle",
            "0.5",
            "--dead-forward-requests",
            "1",  # with the forward target dead, each reply waits max_ack_wait_s (5 s)
            "--flood-seconds",
            "1",
            "--flood-threads",
            "2",
            "--flood-in-flight",
            "2",
            "--cache-distinct",
            "200",
        ]
    )
    assert result["largest"]["answers"] == ["OK"] and result["largest"]["peak_mib"] > 0
    assert result["dead_forward"]["accepted"] >= 1 and result["flood"]["requests_accepted"] > 0
    assert result["cache"]["held_after_fill_mib"] < result["cache"]["bound_mib"]
