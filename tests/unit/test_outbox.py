"""The alert outbox: every sink gets every alert at least once and once per key, a slow sink delays
no other, a failure is retried, and what a stopped process had not delivered is delivered by the next."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.outbox import Outbox
from otel_perf.alerting.router import AlertRouter, RouterSettings
from tests.unit.builders import RecordingSink
from tests.unit.test_router import finding


class FlakySink(RecordingSink):
    """Fails its first `failures` deliveries (a webhook down for a while), then records."""

    def __init__(self, name: str = "flaky", failures: int = 1) -> None:
        super().__init__(name)
        self.failures = failures
        self.attempts = 0

    def send(self, alert: Alert) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError("connection refused")
        super().send(alert)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_hung_sink_delays_no_other_sink() -> None:
    """Each sink has its own worker: a webhook that accepts and never answers must not hold the
    file or OTLP sink back (it used to: file lines at +0.3, +17, +33 s)."""
    release = threading.Event()

    class HungSink(RecordingSink):
        def send(self, alert: Alert) -> None:
            release.wait(10)

    fast = RecordingSink("fast")
    r = AlertRouter(RouterSettings(cooldown_s=0), [HungSink("hung"), fast])
    try:
        started = time.monotonic()
        r.submit([finding(f"fp{i}", at_s=i) for i in range(3)])
        wait_for(lambda: len(fast.alerts) == 3, timeout=2)
        assert time.monotonic() - started < 1
    finally:
        release.set()
        r.shutdown()


def test_a_failed_delivery_is_retried_until_the_sink_takes_it() -> None:
    flaky, steady = FlakySink(failures=2), RecordingSink("steady")
    r = AlertRouter(RouterSettings(), [flaky, steady])
    r.submit([finding("a")])
    wait_for(lambda: len(flaky.alerts) == 1, timeout=8)  # after 1 s and 2 s of backoff
    assert flaky.attempts == 3
    assert [alert.finding.fingerprint for alert in steady.alerts] == ["a"]  # once, not three times
    assert r.stats.sink_failures == {"flaky": 2}
    r.shutdown()


def test_what_a_stopped_process_had_not_delivered_the_next_one_delivers_once(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    down = FlakySink("webhook", failures=10**6)
    first = AlertRouter(RouterSettings(), [down], outbox=Outbox(path))
    first.submit([finding("a"), finding("b")])
    wait_for(lambda: down.attempts >= 2)
    first.shutdown(timeout_s=0.1)  # stopped (or killed) with both alerts still owed to the webhook
    up = RecordingSink("webhook")
    second = AlertRouter(RouterSettings(), [up], outbox=Outbox(path))
    second.submit([finding("a")])  # the restarted app raises "a" again, in the same cooldown window
    second._ensure_workers()
    wait_for(lambda: len(up.alerts) == 2, timeout=8)  # the backoff of the first attempt ends
    time.sleep(0.3)
    assert sorted(alert.finding.fingerprint for alert in up.alerts) == ["a", "b"]
    assert all(alert.key for alert in up.alerts)
    second.shutdown()


def test_two_processes_on_one_outbox_deliver_each_alert_once(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite3"
    sinks = [RecordingSink("webhook"), RecordingSink("webhook")]
    routers = [AlertRouter(RouterSettings(cooldown_s=0), [sink], outbox=Outbox(path)) for sink in sinks]
    for number in range(20):
        routers[number % 2].submit([finding(f"fp{number}", at_s=number)])
    for router in routers:
        router._ensure_workers()
    wait_for(lambda: sum(len(sink.alerts) for sink in sinks) >= 20)
    time.sleep(0.3)
    delivered = [alert.finding.fingerprint for sink in sinks for alert in sink.alerts]
    assert sorted(delivered) == sorted(f"fp{number}" for number in range(20))
    for router in routers:
        router.shutdown()


def test_a_record_round_trips_everything_a_sink_reads() -> None:
    alert = Alert(finding("a"), occurrences=3, key="a:1:")
    alert.finding.root_span_id = 42
    again = Alert.from_record(alert.to_record())
    assert again == alert


def test_a_shutdown_that_times_out_leaves_a_delivering_worker_its_outbox(tmp_path: Path) -> None:
    """A webhook hangs past the shutdown's wait: the worker finishes later on an open outbox, no
    traceback in its thread (the outbox used to be closed under it: sqlite3.ProgrammingError)."""
    release = threading.Event()
    errors: list[BaseException] = []
    previous_hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment,misc]

    class HungSink(RecordingSink):
        def send(self, alert: Alert) -> None:
            release.wait(10)
            super().send(alert)

    hung = HungSink("webhook")
    r = AlertRouter(RouterSettings(), [hung], outbox=Outbox(tmp_path / "alerts.sqlite3"))
    try:
        r.submit([finding("a")])
        time.sleep(0.3)  # the worker is in the delivery
        r.shutdown(timeout_s=0.1)
        release.set()
        wait_for(lambda: len(hung.alerts) == 1, timeout=5)
        time.sleep(0.3)  # the worker marks it delivered, then sees the stop
        assert errors == []
    finally:
        release.set()
        threading.excepthook = previous_hook
