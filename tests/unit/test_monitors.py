"""The monitors on their own: trend and error-rate verdicts over windows, and the watcher that
builds the windows (span time, lateness, several writers sharing one SQLite file, restarts)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from otel_perf.alerting.router import AlertRouter, RouterSettings
from otel_perf.processors.findings import Finding
from otel_perf.processors.monitors import build_watcher
from otel_perf.processors.monitors.error_rate import ErrorRateMonitor, ErrorRateSettings
from otel_perf.processors.monitors.resources import (
    HostSampler,
    ResourceMonitor,
    ResourceSettings,
    samples_from_metrics,
)
from otel_perf.processors.monitors.store import WindowStore
from otel_perf.processors.monitors.trend import TrendMonitor, TrendSettings
from otel_perf.processors.monitors.watcher import MonitorSettings, Watcher
from otel_perf.processors.monitors.windows import RESOURCE, Aggregate, SeriesKey, Window

KEY = SeriesKey("shop", "GET /orders/{id}")
SECOND = 10**9
T0 = 1_767_225_600 * SECOND


def window(
    index: int,
    median_ms: float,
    *,
    requests: int = 100,
    errors: int = 0,
    versions: dict[str, float] | None = None,
    seed: int = 0,
) -> Window:
    """One 1-s window: `requests` lognormal durations around `median_ms`, split over `versions`
    (name → share; latency factor 1), `errors` of them failed."""
    rng = random.Random(index * 7919 + seed)
    aggregate = Aggregate()
    shares = list((versions or {"1.0": 1.0}).items())
    for number in range(requests):
        version = rng.choices([name for name, _ in shares], [share for _, share in shares])[0]
        aggregate.add(version, median_ms * rng.lognormvariate(0, 0.3), number < errors)
    start = T0 + index * SECOND
    return Window(start, start + SECOND, aggregate.total, aggregate.versions)


def trend(**overrides: object) -> TrendMonitor:
    chosen: dict[str, object] = {"season_s": 0, "min_requests": 20, "min_reference_windows": 8, **overrides}
    settings = TrendSettings(**chosen)  # type: ignore[arg-type]
    return TrendMonitor(settings, window_s=1)


def run(monitor: TrendMonitor | ErrorRateMonitor, windows: Sequence[Window]) -> list[tuple[int, Finding]]:
    """Evaluate window by window as the watcher does: (index of the window, finding)."""
    state = None
    found = []
    for index in range(1, len(windows) + 1):
        findings, state = monitor.evaluate(KEY, windows[:index], state)
        found.extend((index - 1, finding) for finding in findings)
    return found


def test_a_step_with_a_new_version_is_one_alert_naming_it_within_a_few_windows() -> None:
    windows = [window(i, 50) for i in range(30)] + [window(i, 75, versions={"1.1": 1}) for i in range(30, 40)]
    found = run(trend(), windows)
    assert len(found) == 1
    index, finding = found[0]
    assert 32 <= index <= 35  # min_windows_after (3), and not much later
    assert finding.type == "trend_degradation"
    assert finding.details["version"] == "1.1"
    assert finding.details["change_at"] == "2026-01-01T00:00:30Z"
    assert 1.35 < finding.details["current_ms"] / finding.details["baseline_ms"] < 1.65
    assert finding.details["status"] == "firing"


def test_steady_latency_a_one_window_spike_and_a_small_rise_stay_quiet() -> None:
    flat = [window(i, 50) for i in range(60)]
    spike = [*flat[:40], window(40, 200), *flat[41:]]
    small = flat[:40] + [window(i, 55) for i in range(40, 60)]  # +10 %: under min_increase
    for windows in (flat, spike, small):
        assert run(trend(), windows) == []


def test_a_rise_under_the_absolute_floor_is_not_reported() -> None:
    windows = [window(i, 2) for i in range(30)] + [window(i, 4) for i in range(30, 40)]  # +100 %, +2 ms
    assert run(trend(min_delta_ms=10), windows) == []
    assert len(run(trend(min_delta_ms=1), windows)) == 1


def test_a_compounding_drift_is_found_once_it_has_added_up() -> None:
    windows = [window(i, 50) for i in range(30)] + [window(i, 50 * 1.04 ** (i - 29)) for i in range(30, 50)]
    found = run(trend(), windows)
    assert len(found) == 1
    assert found[0][1].details["version"] is None  # no release coincided


def test_quiet_windows_are_not_compared() -> None:
    windows = [window(i, 50) for i in range(30)] + [window(i, 100, requests=5) for i in range(30, 40)]
    assert run(trend(), windows) == []


def test_daily_seasonality_is_compared_like_with_like() -> None:
    """Hour windows over days: busy afternoons are slower every day, which is not a regression; the
    same shape one release later, 40 % up, is."""

    def day_cycle(hour: int) -> float:
        return 1.6 if 12 <= hour % 24 < 18 else 1.0

    def hourly(index: int, factor: float = 1.0, version: str = "1.0") -> Window:
        w = window(index, 50 * day_cycle(index) * factor, versions={version: 1}, seed=1)
        start = T0 + index * 3600 * SECOND
        return Window(start, start + 3600 * SECOND, w.total, w.versions)

    monitor = TrendMonitor(TrendSettings(min_requests=20), window_s=3600)
    steady = [hourly(i) for i in range(24 * 5)]
    assert run(monitor, steady) == []
    released = steady + [hourly(i, 1.4, "2.0") for i in range(24 * 5, 24 * 5 + 8)]
    found = run(monitor, released)
    assert len(found) == 1 and found[0][1].details["version"] == "2.0"


def test_a_slower_canary_is_compared_with_the_version_beside_it() -> None:
    before = [window(i, 50) for i in range(20)]
    canary = []
    for i in range(20, 30):
        old = window(i, 50, requests=80)
        new = window(i, 90, requests=40, versions={"2.0-canary": 1}, seed=3)
        aggregate = Aggregate(old.total, dict(old.versions))
        aggregate.merge(Aggregate(new.total, dict(new.versions)))
        canary.append(Window(old.start_ns, old.end_ns, aggregate.total, aggregate.versions))
    found = run(trend(), before + canary)
    assert len(found) == 1
    details = found[0][1].details
    assert details["canary"] is True
    assert details["version"] == "2.0-canary" and details["baseline_version"] == "1.0"
    assert details["current_ms"] > details["baseline_ms"] * 1.5


def test_a_regression_resolves_when_latency_returns() -> None:
    windows = (
        [window(i, 50) for i in range(30)]
        + [window(i, 100, versions={"1.1": 1}) for i in range(30, 40)]
        + [window(i, 50, versions={"1.2": 1}) for i in range(40, 50)]
    )
    found = run(trend(), windows)
    assert [finding.details["status"] for _, finding in found] == ["firing", "resolved"]
    assert found[0][1].fingerprint == found[1][1].fingerprint
    assert 41 <= found[1][0] <= 44  # once most of the last few windows are back


def test_error_rate_alerts_once_names_the_release_and_resolves() -> None:
    monitor = ErrorRateMonitor(ErrorRateSettings(), window_s=1)
    windows = (
        [window(i, 50, errors=i % 2) for i in range(10)]
        + [window(i, 50, errors=25, versions={"1.1": 1}) for i in range(10, 15)]
        + [window(i, 50, versions={"1.2": 1}) for i in range(15, 20)]
    )
    found = run(monitor, windows)
    assert [(index, finding.details["status"]) for index, finding in found] == [
        (10, "firing"),
        (16, "resolved"),
    ]
    assert found[0][1].severity.label == "critical"  # 25 %
    assert found[0][1].details["version"] == "1.1"


def test_error_rate_needs_volume_and_a_few_failures() -> None:
    monitor = ErrorRateMonitor(ErrorRateSettings(), window_s=1)
    assert run(monitor, [window(0, 50, requests=10, errors=5)]) == []  # under min_requests
    assert run(monitor, [window(0, 50, requests=60, errors=3)]) == []  # 5 %, but 3 is bad luck


def test_error_rate_names_the_failing_version_beside_a_healthy_one() -> None:
    old = window(0, 50, requests=100)
    new = window(0, 50, requests=50, errors=20, versions={"2.0": 1})
    aggregate = Aggregate(old.total, dict(old.versions))
    aggregate.merge(Aggregate(new.total, dict(new.versions)))
    found = run(
        ErrorRateMonitor(ErrorRateSettings(), 1),
        [Window(old.start_ns, old.end_ns, aggregate.total, aggregate.versions)],
    )
    assert len(found) == 1 and found[0][1].details["version"] == "2.0"


class Kept:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def submit(self, findings: Sequence[Finding]) -> None:
        self.findings.extend(findings)

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        pass


def settings(path: Path | str) -> MonitorSettings:
    return MonitorSettings(window_s=1, lateness_s=0.5, flush_interval_s=0.1, state_path=str(path))


def test_two_writers_sharing_a_file_merge_their_windows_and_judge_each_once(tmp_path: Path) -> None:
    now = [T0]
    kept = Kept()
    monitors = [ErrorRateMonitor(ErrorRateSettings(), 1)]
    writers = [
        Watcher(settings(tmp_path / "m.sqlite3"), monitors, kept, clock=lambda: now[0]) for _ in range(2)
    ]
    for writer in writers:  # 15 requests each, 4 failed each: 8 of 30 (27 %) only together
        for number in range(15):
            writer.record("shop", "POST /orders", "1.0", T0 + 100_000_000 + number, 5_000_000, number < 4)
        writer.flush()
    now[0] = T0 + 2 * SECOND
    for writer in writers:
        writer.advance()
    assert len(kept.findings) == 1
    details = kept.findings[0].details
    assert (details["requests"], details["errors"]) == (30, 8)
    assert sum(writer.stats.windows_judged for writer in writers) == 1


def test_a_restart_finds_its_baseline_and_its_open_alerts(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    monitor = trend(min_reference_windows=5)
    kept = Kept()

    def serve(seconds: range, median_ms: float, version: str) -> None:
        now = [T0]
        watcher = Watcher(settings(path), [monitor], kept, clock=lambda: now[0])
        rng = random.Random(median_ms)
        for second in seconds:
            for number in range(60):  # a p95 needs 50 requests in a window to be compared
                duration = int(median_ms * rng.lognormvariate(0, 0.2) * 1e6)
                watcher.record(
                    "shop",
                    "GET /search",
                    version,
                    T0 + second * SECOND + number * 10_000_000,
                    duration,
                    False,
                )
            now[0] = T0 + (second + 1) * SECOND + SECOND // 2
            watcher.advance()
        watcher.shutdown()

    serve(range(0, 12), 20, "1.0")
    assert kept.findings == []
    serve(range(20, 26), 60, "1.1")  # a new process: nothing in memory
    assert [f.details["version"] for f in kept.findings] == ["1.1"]
    serve(range(30, 36), 60, "1.1")  # still slow after another restart: no second alert
    assert len(kept.findings) == 1
    assert WindowStore(path).state("trend_degradation", SeriesKey("shop", "GET /search")) is not None


def test_live_span_times_are_bounded_by_the_clock_and_late_requests_counted(tmp_path: Path) -> None:
    now = [T0]
    watcher = Watcher(
        settings(":memory:"), [ErrorRateMonitor(ErrorRateSettings(), 1)], Kept(), clock=lambda: now[0]
    )
    watcher.record("shop", "GET /", None, T0 + 10**6, 10**6, False)
    watcher.record("shop", "GET /", None, 4_102_444_800 * SECOND, 10**6, False)  # year 2100: counted now
    watcher.advance()
    now[0] = T0 + 5 * SECOND
    watcher.advance()
    watcher.record("shop", "GET /", None, T0 + 10**6, 10**6, False)  # its window was judged
    watcher.advance()
    assert watcher.stats.dropped_late == 1
    assert watcher.store.windows(SeriesKey("shop", "GET /"), 0)[0][1].total.count == 2


def test_an_unwritable_state_path_keeps_watching_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = WindowStore(blocker / "sub" / "m.sqlite3")
    assert not store.persistent
    store.save_part(KEY, 0, "w", Aggregate())
    assert store.seal(KEY, 0)[1]


def test_build_watcher_is_none_when_watching_is_off() -> None:
    assert build_watcher(MonitorSettings(enabled=False)) is None
    off = {
        "trend_degradation": TrendSettings(enabled=False),
        "error_rate": ErrorRateSettings(enabled=False),
        "resource": ResourceSettings(enabled=False),
    }
    assert build_watcher(MonitorSettings(), off) is None


def test_the_router_sends_a_resolution_inside_the_cooldown() -> None:
    router = AlertRouter(RouterSettings(cooldown_s=3600, min_severity="high"), replay=True)  # type: ignore[arg-type]
    firing = run(
        trend(),
        [window(i, 50) for i in range(30)]
        + [window(i, 100) for i in range(30, 36)]
        + [window(i, 50) for i in range(36, 42)],
    )
    decisions = [router.decide(finding) for _, finding in firing]
    assert [alert is not None for alert in decisions] == [True, True]


def resource_window(index: int, samples: Sequence[float], window_s: int = 300) -> Window:
    aggregate = Aggregate()
    for value in samples:
        aggregate.add(None, value, False)
    start = T0 + index * window_s * SECOND
    return Window(start, start + window_s * SECOND, aggregate.total, aggregate.versions)


def test_a_resource_alerts_on_a_sustained_mean_never_on_one_sample() -> None:
    monitor = ResourceMonitor(ResourceSettings(), window_s=300)
    cpu = SeriesKey("shop", "cpu on web-1", RESOURCE)
    spike = [resource_window(0, [20, 20, 100, 20, 20])]
    assert run_series(monitor, cpu, spike) == []
    busy = [
        resource_window(0, [30] * 5),
        resource_window(1, [85, 90, 88, 86, 84]),
        resource_window(2, [97] * 5),
        resource_window(3, [40] * 5),
    ]
    found = run_series(monitor, cpu, busy)
    assert [(index, finding.details["status"]) for index, finding in found] == [
        (1, "firing"),
        (3, "resolved"),
    ]
    assert found[0][1].severity.label == "high" and found[0][1].details["threshold_percent"] == 80
    disk = SeriesKey("shop", "disk / on web-1", RESOURCE)
    assert run_series(monitor, disk, [resource_window(0, [88] * 5)]) == []  # disk: 90 %
    pool = SeriesKey("shop", "db_pool postgresql://db/shop on web-1", RESOURCE)
    assert run_series(monitor, pool, [resource_window(0, [96] * 5)])[0][1].severity.label == "critical"


def run_series(
    monitor: ResourceMonitor, key: SeriesKey, windows: Sequence[Window]
) -> list[tuple[int, Finding]]:
    state = None
    found = []
    for index in range(1, len(windows) + 1):
        findings, state = monitor.evaluate(key, windows[:index], state)
        found.extend((index - 1, finding) for finding in findings)
    return found


def test_the_analyzer_reads_cpu_memory_and_disk_from_system_metrics() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: str | int) -> KeyValue:
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        return KeyValue(key=key, value=any_value)

    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    resource.resource.attributes.extend([kv("service.name", "shop"), kv("host.name", "web-1")])
    metrics = resource.scope_metrics.add().metrics
    cpu = metrics.add(name="system.cpu.utilization")
    for number, idle in ((1, 0.1), (2, 0.3)):
        for state, value in (("idle", idle), ("user", 1 - idle)):
            cpu.gauge.data_points.add(
                as_double=value, time_unix_nano=T0, attributes=[kv("cpu", number), kv("state", state)]
            )
    memory = metrics.add(name="system.memory.utilization")
    memory.gauge.data_points.add(as_double=0.5, time_unix_nano=T0, attributes=[kv("state", "used")])
    memory.gauge.data_points.add(as_double=0.5, time_unix_nano=T0, attributes=[kv("state", "free")])
    metrics.add(name="http.server.duration")
    samples = {name: round(percent, 3) for _, name, percent, _ in samples_from_metrics(request)}
    assert samples == {"cpu on web-1": 80.0, "memory on web-1": 50.0}


def test_pool_usage_reads_checked_out_connections_of_the_apps_engines(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    from otel_perf.processors import orm

    orm.watch_lazy_loads()
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}", pool_size=2, max_overflow=2)
    first, second, third = engine.connect(), engine.connect(), engine.connect()
    for connection in (first, second, third):
        connection.execute(text("SELECT 1"))
    usage = {name: (used, capacity) for name, used, capacity in orm.pool_usage()}
    name = f"sqlite:///{tmp_path / 'shop.db'}"
    assert usage[name] == (3, 4)
    host = HostSampler(ResourceSettings(disk_path=str(tmp_path)), "web-1").samples()
    names = [each for each, _ in host]
    assert names[:3] == ["cpu on web-1", "memory on web-1", f"disk {tmp_path} on web-1"]
    assert (f"db_pool {name} on web-1", 75.0) in host
    for connection in (first, second, third):
        connection.close()
    engine.dispose()


def spanmetrics_report(counts: dict[tuple[str, str], list[int]], time_ns: int, start_ns: int = T0) -> object:
    """A cumulative `traces.span.metrics.duration` report as the spanmetrics connector sends it:
    (span.kind, status.code) → bucket counts over the gateway's buckets."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    resource.resource.attributes.extend([kv("service.name", "shop"), kv("service.version", "2.0")])
    metric = resource.scope_metrics.add().metrics.add(name="traces.span.metrics.duration", unit="ms")
    metric.histogram.aggregation_temporality = 2  # cumulative
    for (kind, status), buckets in counts.items():
        point = metric.histogram.data_points.add(
            start_time_unix_nano=start_ns,
            time_unix_nano=time_ns,
            explicit_bounds=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
            bucket_counts=buckets,
            count=sum(buckets),
        )
        point.attributes.extend(
            [
                kv("service.name", "shop"),
                kv("span.name", "GET /orders"),
                kv("span.kind", kind),
                kv("status.code", status),
            ]
        )
    return request


def test_spanmetrics_deltas_become_requests_of_entry_spans() -> None:
    from otel_perf.processors.monitors.spanmetrics import SpanMetricsReader

    reader = SpanMetricsReader()
    zero = [0] * 12
    first = {
        ("SPAN_KIND_SERVER", "STATUS_CODE_UNSET"): [0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ("SPAN_KIND_SERVER", "STATUS_CODE_ERROR"): zero,
        ("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET"): [50, *zero[1:]],
    }
    assert reader.requests(spanmetrics_report(first, T0 + SECOND)) == []  # the baseline
    second = {
        ("SPAN_KIND_SERVER", "STATUS_CODE_UNSET"): [0, 0, 30, 5, 0, 0, 0, 0, 0, 0, 0, 0],
        ("SPAN_KIND_SERVER", "STATUS_CODE_ERROR"): [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0],
        ("SPAN_KIND_CLIENT", "STATUS_CODE_UNSET"): [90, *zero[1:]],
    }
    found = reader.requests(spanmetrics_report(second, T0 + 2 * SECOND))
    assert [(each.operation, each.failed, each.count, each.version) for each in found] == [
        ("GET /orders", False, 25, "2.0"),
        ("GET /orders", True, 2, "2.0"),
    ]
    assert all(10 < value <= 25 for value, _ in found[0].durations[:4])  # spread inside (10, 25]
    restarted = reader.requests(spanmetrics_report(first, T0 + 3 * SECOND, start_ns=T0 + 3 * SECOND))
    assert [each.count for each in restarted] == [10]  # a new start time: counted from zero


def test_a_window_a_stopped_process_left_open_is_sealed_by_the_next_one(tmp_path: Path) -> None:
    now = [T0]
    monitor_settings = MonitorSettings(
        window_s=60, lateness_s=10, flush_interval_s=1, state_path=str(tmp_path / "m")
    )
    old = Watcher(monitor_settings, [ErrorRateMonitor(ErrorRateSettings(), 60)], Kept(), clock=lambda: now[0])
    for number in range(50):
        old.record("shop", "GET /", "1.0", T0 + 30 * SECOND + number, 10**6, number < 10)
    now[0] = T0 + 65 * SECOND  # the window ended, its lateness has not: stopped before it closed
    old.advance()
    old.shutdown()
    kept = Kept()
    new = Watcher(monitor_settings, [ErrorRateMonitor(ErrorRateSettings(), 60)], kept, clock=lambda: now[0])
    new.record("shop", "GET /", "1.0", T0 + 70 * SECOND, 10**6, False)
    now[0] = T0 + 200 * SECOND
    new.advance()
    sealed = {
        start: aggregate.total.count for start, aggregate in new.store.windows(SeriesKey("shop", "GET /"), 0)
    }
    assert sealed == {T0: 50, T0 + 60 * SECOND: 1}
    assert new.store.unsealed(now[0]) == []
    assert [finding.details["errors"] for finding in kept.findings] == [10]  # judged, by the new one


def test_a_part_saved_after_the_window_was_sealed_is_merged_into_it(tmp_path: Path) -> None:
    store = WindowStore(tmp_path / "m")
    early, late = Aggregate(), Aggregate()
    for _ in range(30):
        early.add("1.0", 10, False)
    for _ in range(8):
        late.add("1.0", 10, True)
    store.save_part(KEY, T0, "a", early)
    assert store.seal(KEY, T0)[1]
    store.save_part(KEY, T0, "b", late)
    merged, judged = store.seal(KEY, T0)
    assert not judged and merged is not None
    assert (merged.total.count, merged.total.errors) == (38, 8)
    assert store.windows(KEY, 0)[0][1].total.count == 38


def test_a_window_keeps_its_mean_through_the_state_file() -> None:
    aggregate = Aggregate()
    for value in (80.0, 90.0, 100.0):
        aggregate.add(None, value, False)
    restored = Aggregate.loads(aggregate.dumps())
    restored.merge(Aggregate.loads(aggregate.dumps()))
    assert restored.total.count == 6 and restored.total.mean == 90.0


def test_a_cached_quantile_follows_adds_and_merges() -> None:
    aggregate = Aggregate()
    for _ in range(100):
        aggregate.add(None, 10.0, False)
    assert round(aggregate.total.quantile(0.95)) == 10
    for _ in range(100):
        aggregate.add(None, 100.0, False)
    assert round(aggregate.total.quantile(0.95)) == 100
    other = Aggregate()
    for _ in range(1000):
        other.add(None, 1000.0, False)
    aggregate.merge(other)
    assert round(aggregate.total.quantile(0.95), -1) == 1000


def test_a_release_after_a_restart_gap_is_named_even_when_the_split_lands_before_it() -> None:
    """The old release's last window was slow (a busy moment before the deploy), then nothing while
    the app restarted, then the slower release: its version is named all the same."""
    before = [window(i, 50) for i in range(20)] + [window(20, 80)]
    after = [window(i, 100, versions={"1.1": 1}) for i in range(30, 36)]  # 9 s of restart gap
    found = run(trend(), before + after)
    assert len(found) == 1 and found[0][1].details["version"] == "1.1"


def test_shutdown_leaves_one_state_file_with_the_open_windows_in_it(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    watcher = Watcher(settings(path), [ErrorRateMonitor(ErrorRateSettings(), 1)], Kept(), clock=lambda: T0)
    watcher.record("shop", "GET /", "1.0", T0, 10**6, False)
    watcher.advance()
    watcher.shutdown()
    assert sorted(each.name for each in tmp_path.iterdir()) == ["m.sqlite3"]  # no -wal, -shm left
    assert WindowStore(path).unsealed(T0 + SECOND) == [(SeriesKey("shop", "GET /"), T0)]
