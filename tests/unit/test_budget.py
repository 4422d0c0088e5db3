"""The CPU share of in-process analysis bounds its overhead; no endpoint is starved."""

from __future__ import annotations

import time

from otel_perf.processors.budget import AnalysisBudget


def test_unlimited_share_analyses_everything() -> None:
    budget = AnalysisBudget(1.0)
    for _ in range(1000):
        assert budget.allow("GET /orders")
        budget.charge(1.0, "GET /orders")


def test_spent_budget_skips_then_refills_with_time() -> None:
    budget = AnalysisBudget(0.05, fairness_s=60)
    assert budget.allow("GET /orders")  # first of its operation: always analysed
    budget.charge(0.01, "GET /orders")  # 10 ms of CPU: a debt, nothing is saved up at start
    assert not budget.allow("GET /orders")
    time.sleep(0.25)  # refills 12.5 ms of CPU: enough to pay the 10 ms debt
    assert budget.allow("GET /orders")


def test_an_operation_not_analysed_lately_is_analysed_anyway() -> None:
    budget = AnalysisBudget(0.01, fairness_s=0.2)
    budget.charge(1.0, "GET /hot")
    assert not budget.allow("GET /hot")
    assert budget.allow("GET /rare")  # never analysed: fairness lets it through
    budget.charge(0.001, "GET /rare")
    assert not budget.allow("GET /rare")
    time.sleep(0.25)
    assert budget.allow("GET /rare")
