"""Settings per service and operation (`…_SCOPES`): every detector honours them, and a bad scope is
one line naming the variable."""

from __future__ import annotations

import logging

import pytest

from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.detectors.n_plus_one import NPlusOneSettings
from otel_perf.processors.detectors.slow_span import SlowSpanSettings
from otel_perf.processors.errors import SettingsError
from otel_perf.processors.tree import FirstRequests, TraceTree
from tests.unit.builders import loop, query, server, tree


def reports_loop(endpoint: str = "GET /reports/daily", service: str = "shop", count: int = 8):
    root = server(endpoint, 0, 100, service=service)
    return root, loop(root, [f"SELECT * FROM t WHERE id = {i}" for i in range(count)])


def types(sections: dict, *nodes) -> list[str]:
    return sorted(finding.type for finding in analyze_tree(tree(*nodes), build_detectors(sections)))


def test_an_operation_scope_raises_a_threshold_there_only() -> None:
    sections = {"n_plus_one": NPlusOneSettings.load(scopes={"operation:GET /reports/*": {"min_repeats": 20}})}
    assert types(sections, *reports_loop()) == []
    assert types(sections, *reports_loop("GET /orders")) == ["n_plus_one"]


def test_a_scope_can_lower_a_threshold_below_the_default() -> None:
    sections = {"n_plus_one": NPlusOneSettings.load(scopes={"service:billing": {"min_repeats": 3}})}
    assert types(sections, *reports_loop(service="billing", count=3)) == ["n_plus_one"]
    assert types(sections, *reports_loop(service="shop", count=3)) == []


def test_a_detector_turned_off_for_a_service_or_on_for_one_operation_only() -> None:
    off = {"n_plus_one": NPlusOneSettings.load(scopes={"service:batch-*": {"enabled": False}})}
    assert types(off, *reports_loop(service="batch-nightly")) == []
    assert types(off, *reports_loop(service="shop")) == ["n_plus_one"]
    only = {
        "n_plus_one": NPlusOneSettings.load(
            enabled=False, scopes={"operation:GET /orders": {"enabled": True}}
        )
    }
    assert types(only, *reports_loop("GET /orders")) == ["n_plus_one"]
    assert types(only, *reports_loop()) == []


def test_the_operation_scope_wins_over_the_service_scope() -> None:
    settings = NPlusOneSettings.load(
        scopes={
            "operation:GET /orders": {"min_repeats": 9},
            "service:shop": {"min_repeats": 3, "high_ms": 100},
        }
    )
    scoped = settings.at("shop", "GET /orders")
    assert (scoped.min_repeats, scoped.high_ms) == (9, 100)
    assert settings.at("other", "GET /x") is settings


def test_slow_query_thresholds_per_operation_such_as_startup() -> None:
    sections = {"slow_span": SlowSpanSettings.load(scopes={"operation:startup": {"db_ms": 2000}})}
    ddl = query("CREATE TABLE orders (id INTEGER)", 0, 500, None)
    startup = TraceTree(1, [ddl], FirstRequests())  # no request seen yet: start-up work
    assert analyze_tree(startup, build_detectors(sections)) == []
    root = server("GET /orders", 0, 200)
    assert types(sections, root, query("SELECT * FROM orders", 1, 150, root)) == ["slow_span"]


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ('{"route:/x": {"min_repeats": 9}}', "must be service:<glob> or operation:<glob>"),
        ('{"service:x": {"min_repets": 9}}', "not settings of this section"),
        ('{"service:x": {"min_repeats": 1}}', "min_repeats: Input should be greater than or equal to 2"),
        ('{"service:x": {"min_repeats": 9', "OTEL_PERF_N_PLUS_ONE_SCOPES"),
        # With the section's own medium_ms (50): the scope's high_ms leaves medium unreachable there.
        (
            '{"service:x": {"high_ms": 10}}',
            "scope 'service:x' puts OTEL_PERF_N_PLUS_ONE_MEDIUM_MS above OTEL_PERF_N_PLUS_ONE_HIGH_MS",
        ),
    ],
)
def test_a_bad_scope_names_the_variable_and_what_is_wrong(
    scopes: str, message: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_SCOPES", scopes)
    with pytest.raises(SettingsError, match="OTEL_PERF_N_PLUS_ONE_SCOPES"):
        NPlusOneSettings.load(strict=True)
    with caplog.at_level(logging.ERROR, logger="otel_perf.settings"):
        assert NPlusOneSettings.load().scopes == {}  # the app still runs, on the defaults
    assert message in caplog.text
    assert "Traceback" not in caplog.text


def test_settings_read_before_the_operation_is_known_cannot_be_scoped() -> None:
    with pytest.raises(SettingsError, match="overrides"):
        SlowSpanSettings.load(strict=True, scopes={"service:x": {"overrides": {"route:/a": 5}}})
