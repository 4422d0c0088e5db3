"""The performance targets that are met, held to (`scripts/test -m slow`: minutes, full-size runs;
timing on a shared machine, so not in the default suite). Figures: BENCHMARKS.md."""

from __future__ import annotations

import pytest

from benchmarks import request_overhead, scaling, span_overhead

pytestmark = pytest.mark.slow


@pytest.mark.timeout(1200)
def test_span_processor_costs_at_most_ten_percent_with_shipped_defaults() -> None:
    assert span_overhead.main([])["cpu_ratio_otel_perf"] <= 1.10


@pytest.mark.timeout(1800)
def test_otel_perf_adds_at_most_five_percent_to_opentelemetry_on_a_real_endpoint() -> None:
    result = request_overhead.main([])
    assert result["otel_perf_vs_otel_p50"] <= 1.05
    assert result["otel_perf_vs_otel_throughput"] >= 0.95


@pytest.mark.timeout(1200)
def test_analysis_cost_per_span_stays_flat_and_memory_bounded() -> None:
    result = scaling.main([])
    for shape in ("bushy", "wide", "deep"):
        assert result[f"{shape}_largest_to_smallest"] < 3, shape
    flood = result["flood"]
    assert flood["within_bounds"] and flood["rss_growth_second_half_mb"] < 5
