"""AlertRouter: which findings become alerts (time from the findings), and delivery that never blocks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.router import AlertRouter, RouterSettings
from otel_perf.alerting.sinks import FileSink
from otel_perf.processors.findings import Finding, Severity
from tests.unit.builders import RecordingSink

S = 10**9  # ns per second
T0 = 1_700_000_000 * S  # a fixed point in the past: the wall clock must not matter


def finding(
    fp: str = "fp-1", *, at_s: float = 0, severity: Severity = Severity.MEDIUM, type_: str = "n_plus_one"
) -> Finding:
    return Finding(
        type=type_,
        severity=severity,
        service="shop",
        operation="GET /orders/{id}",
        title=f"N+1 queries: 10× SELECT in GET /orders/{{id}} ({fp})",
        fingerprint=fp,
        trace_id="ab" * 16,
        offending=[0x0123456789ABCDEF],
        details={
            "kind": "db",
            "count": 10,
            "statement": "SELECT * FROM t WHERE id = ?",
            "parent_span": "GET /orders/{id}",
            "total_duration_ms": 12.5,
        },
        time_ns=T0 + int(at_s * S),
    )


def router(**settings) -> AlertRouter:
    """Routing by span time alone, as `otel-perf analyze` does (live hosts: see the clock tests)."""
    return AlertRouter(RouterSettings(**settings), replay=True)


class RaisingSink(RecordingSink):
    def send(self, alert: Alert) -> None:
        raise RuntimeError("sink is down")


# --- decisions ------------------------------------------------------------------------------------


def test_min_severity() -> None:
    r = router(min_severity="high")
    assert r.decide(finding("a", severity=Severity.MEDIUM)) is None
    assert r.decide(finding("b", severity=Severity.HIGH)) is not None
    assert r.decide(finding("c", severity=Severity.CRITICAL)) is not None
    assert r.stats.suppressed_severity == 1


def test_cooldown_by_fingerprint_uses_the_findings_time() -> None:
    r = router(cooldown_s=600)
    assert r.decide(finding("a", at_s=0)) is not None
    assert r.decide(finding("a", at_s=599)) is None  # the same issue inside the cooldown
    assert r.decide(finding("b", at_s=1)) is not None  # another issue is not affected
    assert r.decide(finding("a", at_s=600)) is not None  # cooldown measured in span time
    assert r.stats.suppressed_duplicate == 1
    assert r.stats.received == 4


def test_cooldown_does_not_use_the_wall_clock() -> None:
    # Findings from a replay of last year's traces, hours apart in span time but decided within
    # milliseconds of each other: each is outside the previous one's cooldown.
    r = router(cooldown_s=3600)
    sent = [r.decide(finding("a", at_s=hour * 3601)) for hour in range(5)]
    assert all(alert is not None for alert in sent)


def test_escalation_inside_cooldown_is_sent() -> None:
    r = router(cooldown_s=900)
    assert r.decide(finding("a", at_s=0, severity=Severity.LOW)) is not None
    escalated = r.decide(finding("a", at_s=10, severity=Severity.HIGH))
    assert escalated is not None and escalated.finding.severity == Severity.HIGH
    assert r.decide(finding("a", at_s=20, severity=Severity.HIGH)) is None
    assert r.decide(finding("a", at_s=30, severity=Severity.MEDIUM)) is None
    assert r.decide(finding("a", at_s=40, severity=Severity.CRITICAL)) is not None


def test_per_type_hourly_limit() -> None:
    r = router(max_per_hour=3, cooldown_s=0)
    decisions = [r.decide(finding(f"fp{i}", at_s=i * 60)) for i in range(5)]
    assert [d is not None for d in decisions] == [True, True, True, False, False]
    assert r.stats.suppressed_rate_limit == 2
    # Another type has its own budget.
    assert r.decide(finding("slow", at_s=300, type_="slow_span")) is not None
    # An hour after the first alert, its slot is free again.
    assert r.decide(finding("fp9", at_s=3600)) is not None
    assert r.decide(finding("fp10", at_s=3601)) is None


def test_occurrences_count_suppressed_repeats() -> None:
    r = router(cooldown_s=100)
    assert r.decide(finding("a", at_s=0)).occurrences == 1
    for second in (10, 20, 30):
        assert r.decide(finding("a", at_s=second)) is None
    alert = r.decide(finding("a", at_s=150))
    assert alert is not None
    assert alert.occurrences == 4  # this one plus the three suppressed
    assert alert.to_json()["occurrences"] == 4
    assert r.decide(finding("a", at_s=300)).occurrences == 1


def test_bad_min_severity_rejected() -> None:
    with pytest.raises(ValueError, match="severity"):
        RouterSettings(min_severity="urgent")


# --- delivery -------------------------------------------------------------------------------------


def test_a_failing_sink_is_counted_and_others_still_get_the_alert() -> None:
    failing, first, last = RaisingSink("broken"), RecordingSink("first"), RecordingSink("last")
    r = AlertRouter(RouterSettings(), [first, failing, last])
    r.submit([finding("a"), finding("b")])
    assert r.flush(5)
    assert [a.finding.fingerprint for a in first.alerts] == ["a", "b"]
    assert [a.finding.fingerprint for a in last.alerts] == ["a", "b"]
    assert r.stats.sink_failures == {"broken": 2}
    assert r.stats.sent == 2
    r.shutdown()


def test_submit_applies_the_decisions() -> None:
    sink = RecordingSink()
    r = AlertRouter(RouterSettings(min_severity="medium"), [sink])
    r.submit([finding("a", severity=Severity.LOW), finding("b"), finding("b", at_s=1)])
    assert r.flush(5)
    assert [a.finding.fingerprint for a in sink.alerts] == ["b"]
    r.shutdown()


def test_file_sink_writes_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = FileSink(path)
    r = AlertRouter(RouterSettings(), [sink])
    r.submit([finding("a"), finding("b", severity=Severity.CRITICAL)])
    r.shutdown()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    alerts = [json.loads(line) for line in lines]
    for alert in alerts:
        for key in (
            "type",
            "severity",
            "service",
            "operation",
            "trace_id",
            "span_ids",
            "fingerprint",
            "title",
            "details",
            "occurrences",
            "time",
        ):
            assert key in alert, key
        assert alert["type"] == "n_plus_one"
        assert alert["trace_id"] == "ab" * 16
        assert alert["span_ids"] == ["0123456789abcdef"]
        assert alert["details"]["statement"] == "SELECT * FROM t WHERE id = ?"
        assert alert["time"].startswith("2023-11-14T22:13:20")
    assert [a["severity"] for a in alerts] == ["medium", "critical"]
    assert [a["fingerprint"] for a in alerts] == ["a", "b"]


def test_file_sink_appends(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"earlier": true}\n', encoding="utf-8")
    sink = FileSink(path)
    sink.send(Alert(finding("a")))
    sink.close()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_a_full_outbox_drops_and_counts_without_blocking() -> None:
    entered, release = threading.Event(), threading.Event()

    class BlockingSink(RecordingSink):
        def send(self, alert: Alert) -> None:
            entered.set()
            release.wait(10)
            super().send(alert)

    sink = BlockingSink()
    size = len(json.dumps(Alert(finding("first")).to_record(), separators=(",", ":"), default=str).encode())
    # Room for two alerts' bytes: the one in the sink (not delivered yet) and one more.
    r = AlertRouter(RouterSettings(max_pending_bytes=int(2.5 * size), cooldown_s=0), [sink])
    try:
        r.submit([finding("first")])
        assert entered.wait(5)  # the worker holds "first" inside the sink
        started = time.perf_counter()
        r.submit([finding("second"), finding("third"), finding("fourth")])
        assert time.perf_counter() - started < 0.5
        assert r.stats.dropped_queue_full == 2
    finally:
        release.set()
    assert r.flush(5)
    assert [a.finding.fingerprint for a in sink.alerts] == ["first", "second"]
    r.shutdown()


# --- live hosts: span time bounded by the receive time --------------------------------------------

YEAR_2100 = 4_102_444_800 * S


def _dated(fp: str, time_ns: int, type_: str = "n_plus_one") -> Finding:
    item = finding(fp, type_=type_)
    item.time_ns = time_ns
    return item


class FakeClock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def test_findings_dated_in_the_future_cannot_silence_current_ones() -> None:
    clock = FakeClock(T0)
    live = AlertRouter(RouterSettings(max_per_hour=60, max_clock_skew_s=300), clock=clock)
    for index in range(60):  # a sender with a clock in 2100 fills this hour's budget
        assert live.decide(_dated(f"future-{index}", YEAR_2100)) is not None
    assert live.decide(_dated("current", T0)) is None
    # An hour and the skew allowance later (not in 2100), current findings are alerted again.
    clock.now_ns = T0 + 3600 * S + 301 * S
    assert live.decide(_dated("current", clock.now_ns)) is not None


def test_a_cooldown_started_by_a_future_date_ends_on_time() -> None:
    clock = FakeClock(T0)
    live = AlertRouter(RouterSettings(cooldown_s=60, max_clock_skew_s=300), clock=clock)
    assert live.decide(_dated("fp", YEAR_2100)) is not None
    assert live.decide(_dated("fp", T0)) is None  # inside the cooldown
    clock.now_ns = T0 + 361 * S  # skew + cooldown later
    assert live.decide(_dated("fp", clock.now_ns)) is not None


def test_remembered_alerts_of_another_host_are_bounded_too() -> None:
    clock = FakeClock(T0)
    live = AlertRouter(RouterSettings(cooldown_s=60, max_clock_skew_s=300), clock=clock)
    live.remember("fp", YEAR_2100, Severity.MEDIUM)
    clock.now_ns = T0 + 361 * S
    assert live.decide(_dated("fp", clock.now_ns)) is not None


def test_findings_dated_far_in_the_past_are_routed_now() -> None:
    live = AlertRouter(RouterSettings(cooldown_s=900), clock=FakeClock(T0))
    assert live.decide(_dated("fp", 1 * S)) is not None  # 1970
    # A repeat at the real time is inside the cooldown: the first was routed at the receive time.
    assert live.decide(_dated("fp", T0)) is None


def test_span_time_within_the_skew_is_kept_and_replay_keeps_any_span_time() -> None:
    live = AlertRouter(RouterSettings(cooldown_s=60, max_clock_skew_s=300), clock=FakeClock(T0))
    assert live.decide(_dated("fp", T0 - 100 * S)) is not None
    # 61 s of span time later the cooldown is over: sane span time is what routing runs on.
    assert live.decide(_dated("fp", T0 - 39 * S)) is not None
    replay = router(cooldown_s=60)
    assert replay.decide(_dated("fp", YEAR_2100)) is not None
    assert replay.decide(_dated("fp", YEAR_2100 + 61 * S)) is not None


def test_the_console_sink_prints_sql_brackets_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    from otel_perf.alerting.sinks import ConsoleSink

    item = finding("fp")
    item.title = "Slow query SELECT [dbo].[orders].[id] FROM [dbo].[orders] WHERE [/] = ? [bold]x"
    ConsoleSink().send(Alert(item))
    assert "SELECT [dbo].[orders].[id] FROM [dbo].[orders] WHERE [/] = ? [bold]x" in capsys.readouterr().err


def test_the_alerts_table_prints_sql_brackets_as_text() -> None:
    from rich.console import Console

    from otel_perf.render import alerts_table

    item = finding("fp")
    item.title = "Slow query SELECT [dbo].[orders] WHERE [/] = ? in GET /orders/{id}"
    item.details["suggestion"] = "add an index on [dbo].[orders]([id])"
    console = Console(record=True, width=200)
    console.print(alerts_table([Alert(item).to_json()]))
    text = console.export_text()
    assert "SELECT [dbo].[orders] WHERE [/] = ?" in text and "[dbo].[orders]([id])" in text


def test_the_file_sink_creates_no_directory_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_perf.alerting.sinks import SinkSettings, build_sinks

    target = tmp_path / "typo" / "alerts.jsonl"
    sinks = build_sinks(SinkSettings(file=target, otlp=False))
    assert sinks == [] and not target.parent.exists()
    assert "its directory" in caplog.text and "does not exist" in caplog.text
