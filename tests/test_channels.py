"""Alerts to people's channels through Apprise (`OTEL_PERF_ALERTS_APPRISE_URLS`): e-mail to a real
local SMTP server, JSON and form posts to a real local HTTP server, routing by severity, a dead
server retried through the outbox, and no URL (credentials) in any log line.

The alerts are real: the N+1 detector's findings on a trace with literals in its SQL, driven
through the real AlertRouter and the sinks `build_sinks` makes from the settings."""

from __future__ import annotations

import dataclasses
import email
import email.message
import email.policy
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope

from otel_perf.alerting.router import AlertRouter, RouterSettings
from otel_perf.alerting.sinks import APPRISE_MISSING, AppriseSink, SinkSettings, WebhookSink, build_sinks
from otel_perf.processors.detectors.n_plus_one import NPlusOneDetector, NPlusOneSettings
from otel_perf.processors.findings import Finding, Severity
from tests.support.apps import free_port, wait_until
from tests.support.recorder import Recorder
from tests.unit.builders import query, server, tree

SMTP_USER, SMTP_PASSWORD = "alerts-bot", "Sm7pPassw0rdXq"
VARIABLE = "OTEL_PERF_ALERTS_APPRISE_URLS"
LITERALS = ("4242", "alice@example.org")  # in the traced SQL; never in a message


class Mailbox:
    """A real SMTP server (aiosmtpd) on a loopback port, requiring a login, keeping what arrives."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[email.message.EmailMessage] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self._controller: Controller | None = None

    def _login(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        self.logins.append((data.login, data.password))
        ok = (data.login, data.password) == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def start(self) -> Mailbox:
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port, authenticator=self._login, auth_require_tls=False
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, **params: str) -> str:
        query = "&".join(f"{key}={value}" for key, value in {"to": "ops@example.com", **params}.items())
        return (
            f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{self.port}?{query}&from=otel-perf@example.com"
        )


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox().start()
    yield box
    box.stop()


@pytest.fixture
def http() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


def _base(recorder: Recorder) -> str:
    return f"127.0.0.1:{recorder.server.server_address[1]}"


def n_plus_one(severity: Severity = Severity.HIGH, endpoint: str = "GET /orders") -> Finding:
    """The N+1 detector's finding on a trace whose queries carry literals and a code location."""
    location = {
        "code.file.path": "/srv/app/orders.py",
        "code.line.number": 82,
        "code.function.name": "orders",
    }
    root = server(endpoint, 0, 100)
    rows = [
        query(
            f"SELECT * FROM customers WHERE id = {4242 + i} AND email = 'alice@example.org'",
            1 + i * 1.1,
            2 + i * 1.1,
            root,
            extra=location,
        )
        for i in range(12)
    ]
    (finding,) = NPlusOneDetector(NPlusOneSettings()).detect(tree(root, rows))
    return dataclasses.replace(finding, severity=severity)


def router_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> AlertRouter:
    """The router and sinks the app builds from these variables (OTLP and console off)."""
    for name, value in {"OTEL_PERF_ALERTS_OTLP": "false", "OTEL_PERF_ALERTS_CONSOLE": "false", **env}.items():
        monkeypatch.setenv(name, value)
    sinks = build_sinks(SinkSettings.load(strict=True))
    return AlertRouter(RouterSettings(), sinks, replay=True)


def _body(message: email.message.EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    assert part is not None
    return str(part.get_content())


def test_an_alert_arrives_by_e_mail(monkeypatch: pytest.MonkeyPatch, mailbox: Mailbox) -> None:
    router = router_for(
        monkeypatch,
        **{VARIABLE: mailbox.url(), "OTEL_PERF_TRACE_URL": "http://jaeger:16686/trace/{trace_id}"},
    )
    finding = n_plus_one(Severity.HIGH)
    router.submit([finding])
    assert router.flush(10)
    (message,) = mailbox.messages
    assert mailbox.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    subject, body = str(message["Subject"]), _body(message)
    assert subject.startswith("[HIGH] N+1 queries: 12× SELECT") and "GET /orders" in subject
    assert message["To"] == "ops@example.com"
    assert "endpoint: GET /orders" in body and "service: shop" in body
    assert "at: /srv/app/orders.py:82 in orders" in body
    assert "fix: fetch all rows in one query" in body
    assert f"trace: http://jaeger:16686/trace/{finding.trace_id}" in body
    for literal in LITERALS:
        assert literal not in subject and literal not in body
    router.shutdown()


def test_json_and_form_channels_get_the_alert(monkeypatch: pytest.MonkeyPatch, http: Recorder) -> None:
    base = _base(http)
    router = router_for(monkeypatch, **{VARIABLE: f"json://{base}/json, form://{base}/form"})
    router.submit([n_plus_one(Severity.MEDIUM)])
    assert router.flush(10)
    by_path = {request["path"]: request for request in http.requests}
    assert set(by_path) == {"/json", "/form"}
    posted = by_path["/json"]["json"]
    assert posted["title"].startswith("[MEDIUM] N+1 queries: 12×") and posted["type"] == "warning"
    assert "at: /srv/app/orders.py:82 in orders" in posted["message"]
    form = {key: values[0] for key, values in parse_qs(by_path["/form"]["json"]).items()}
    assert form["title"] == posted["title"] and form["message"] == posted["message"]
    router.shutdown()


def test_markdown_channels_get_markdown_that_shows_sql_as_written() -> None:
    """Where Apprise's channel takes markdown (Slack, …), code is in code spans and the rest is
    escaped: `SELECT *` and `[dbo]` are no emphasis or link."""
    from otel_perf.alerting.alert import Alert
    from otel_perf.alerting.sinks import channel_message

    finding = n_plus_one()
    finding.details["suggestion"] = "use [dbo].[orders] * once"
    title, body = channel_message(Alert(finding), None, markdown=True)
    assert title.startswith("[HIGH] N+1 queries: 12× SELECT *")  # a title is plain text
    assert "**at:** `/srv/app/orders.py:82 in orders`" in body
    assert r"**fix:** use \[dbo\]\.\[orders\] \* once" in body
    slack = AppriseSink("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    assert slack._markdown and slack.name == "apprise slack://"  # its "host" is a token: not shown


def test_each_channel_gets_the_severities_it_asks_for(
    monkeypatch: pytest.MonkeyPatch, http: Recorder
) -> None:
    """A low alert reaches only the channel without a minimum; a high one reaches both; the same
    for the webhook (`OTEL_PERF_ALERTS_WEBHOOK_MIN_SEVERITY`). Apprise never sees min_severity."""
    base = _base(http)
    router = router_for(
        monkeypatch,
        **{
            VARIABLE: f"json://{base}/all json://{base}/paging?min_severity=high",
            "OTEL_PERF_ALERTS_WEBHOOK_URL": f"http://{base}/hook",
            "OTEL_PERF_ALERTS_WEBHOOK_MIN_SEVERITY": "high",
        },
    )
    assert sorted(sink.min_severity for sink in router.sinks) == [  # type: ignore[attr-defined]
        Severity.LOW,
        Severity.HIGH,
        Severity.HIGH,
    ]
    router.submit([n_plus_one(Severity.LOW, "GET /low")])
    assert router.flush(10)
    assert [request["path"] for request in http.requests] == ["/all"]
    router.submit([n_plus_one(Severity.HIGH, "GET /high")])
    assert router.flush(10)
    high = sorted(request["path"] for request in http.requests[1:])
    assert high == ["/all", "/hook", "/paging"]
    assert all("min_severity" not in request["path"] for request in http.requests)
    router.shutdown()


def test_a_dead_smtp_server_is_retried_and_blocks_no_other_channel(
    monkeypatch: pytest.MonkeyPatch, http: Recorder
) -> None:
    """The SMTP server is down: the JSON channel gets the alert at once; the e-mail is retried by the
    outbox (backoff) and arrives, once, after the server comes up."""
    down = Mailbox()  # its port, nothing listening yet
    router = router_for(monkeypatch, **{VARIABLE: f"{down.url()} json://{_base(http)}/chat"})
    router.submit([n_plus_one()])
    router.flush(10)
    assert [request["path"] for request in http.requests] == ["/chat"]
    mail = next(sink for sink in router.sinks if sink.name.startswith("apprise mailto"))
    wait_until(lambda: router.stats.sink_failures.get(mail.name), what="the failed e-mail attempt")
    down.start()
    try:
        wait_until(lambda: down.messages, timeout=20, what="the retried e-mail")
        time.sleep(1.5)  # room for a duplicate
        assert len(down.messages) == 1 and len(http.requests) == 1
        assert str(down.messages[0]["Subject"]).startswith("[HIGH] N+1 queries")
    finally:
        router.shutdown()
        down.stop()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mail.log"):  # the SMTP server's own, the test's stand-in
            return
        self.lines.append(
            f"{record.name} {record.getMessage()} {self.format(record) if record.exc_info else ''}"
        )


def test_no_url_credential_reaches_a_log_line(
    monkeypatch: pytest.MonkeyPatch, http: Recorder, mailbox: Mailbox
) -> None:
    """Every logger at DEBUG (Apprise's debug lines name URLs): with channels that fail (a refused
    login, a dead server, HTTP 500) and one that works, no password, token or path shows; our
    lines name each channel by scheme and host."""
    token = "hkT0ken9Zq4Wv"
    dead_port = free_port()
    urls = [
        mailbox.url().replace(SMTP_PASSWORD, "WrongPassw0rd77"),
        f"json://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{dead_port}/hooks/{token}",
        f"form://{_base(http)}/hooks/{token}?token={token}x",
        mailbox.url(),
    ]
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    monkeypatch.setattr(logging.getLogger("otel_perf"), "level", logging.DEBUG)
    http.status = 500
    try:
        router = router_for(monkeypatch, **{VARIABLE: " ".join(urls)})
        router.submit([n_plus_one()])
        router.flush(10)
        wait_until(lambda: sum(router.stats.sink_failures.values()) >= 3, what="three failed channels")
        rows = router.outbox._db.execute("SELECT DISTINCT sink FROM outbox").fetchall()
        router.shutdown()
        # Outside our calls (the app's own use of Apprise or urllib3): a record quoting a channel's
        # URL is let through, the secrets blanked.
        logging.getLogger("apprise").warning("posting to %s", urls[1])
        logging.getLogger("urllib3.connectionpool").debug('"POST /hooks/%s HTTP/1.1" 200', token)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert len(mailbox.messages) == 1
    text = "\n".join(handler.lines)
    for secret in (SMTP_PASSWORD, "WrongPassw0rd77", token, "hooks/", "ops@example.com"):
        assert secret not in text, f"{secret} logged"
    assert "apprise posting to ***" in text
    assert 'urllib3.connectionpool "POST /***/*** HTTP/1.1" 200' in text
    failed = [line for line in handler.lines if "sink failed" in line]
    assert any("apprise json://127.0.0.1 sink failed" in line for line in failed), failed
    assert any("apprise mailto://127.0.0.1 sink failed" in line for line in failed), failed
    assert all(sink.destination.startswith("apprise:") for sink in router.sinks)  # type: ignore[attr-defined]
    assert len(rows) == 4 and not any(SMTP_PASSWORD in row[0] or token in row[0] for row in rows)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("json://127.0.0.1/a?min_severity=urgent", "URL 1 (json://…): min_severity must be low, medium"),
        ("mailto://u:Pw0rdSecret@h.example.com nonsense", "URL 2 is not an Apprise URL"),
        ("json://h/a bogusscheme://Pw0rdSecret@h", "URL 2: Apprise does not take this bogusscheme:// URL"),
        ("json://h/Pw0rdSecret json://h/Pw0rdSecret?min_severity=high", "URL 2 (json://…) repeats"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_no_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str, expected: str
) -> None:
    monkeypatch.setenv(VARIABLE, value)
    with caplog.at_level(logging.DEBUG):
        settings = SinkSettings.load()
    assert settings.apprise_urls is None  # the default: the app runs on
    ours = [record.getMessage() for record in caplog.records if record.name.startswith("otel_perf")]
    (line,) = ours
    assert line.startswith(f"otel-perf: {VARIABLE}='***' is invalid: {expected}"), line
    assert "Pw0rdSecret" not in caplog.text


def test_without_apprise_one_line_says_what_to_install(tmp_path: Path) -> None:
    """Apprise not importable (a plain `pip install otel-perf`): one line, no traceback, the other
    sinks deliver."""
    alerts = tmp_path / "alerts.jsonl"
    code = """
import sys
sys.modules["apprise"] = None  # what a missing package looks like to `import apprise`
from otel_perf.alerting.router import AlertRouter, RouterSettings
from otel_perf.alerting.sinks import SinkSettings, build_sinks
from tests.test_channels import n_plus_one
sinks = build_sinks(SinkSettings.load(strict=True))
router = AlertRouter(RouterSettings(), sinks, replay=True)
router.submit([n_plus_one()])
assert router.flush(10)
print([sink.name for sink in sinks])
"""
    env = {
        VARIABLE: "mailto://u:Pw0rdSecret@smtp.example.com slack://T1/B2/C3",
        "OTEL_PERF_ALERTS_FILE": str(alerts),
        "OTEL_PERF_ALERTS_OTLP": "false",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=Path.cwd()
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == APPRISE_MISSING
    assert result.stdout.strip() == "['file']"
    assert "GET /orders" in alerts.read_text()


def test_an_apps_alert_reaches_a_channel_and_no_span_carries_its_url(
    launch: Callable, http: Recorder
) -> None:
    """End to end: the shop under opentelemetry-instrument raises its N+1; the Apprise channel (JSON
    to a local server) gets it, and the app's HTTP-client instrumentation exports no span of the
    channel's own POST (its URL carries the token)."""
    token = "chanT0kenQ8x2"
    app = launch(
        "instrument",
        env={VARIABLE: f"json://{_base(http)}/hooks/{token}"},
        export={
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    app.get("/orders")

    def orders() -> list[dict[str, Any]]:
        return [each for each in http.requests if "GET /orders" in each["json"].get("title", "")]

    wait_until(orders, timeout=30, what="the channel's POST")
    (request,) = orders()
    assert request["path"] == f"/hooks/{token}"
    assert "] N+1 queries: 25× SELECT" in request["json"]["title"]
    assert "fix: eager-load it" in request["json"]["message"]
    assert "apprise json://127.0.0.1" in app.log()  # the start-up line names the channel
    app.stop()
    assert token not in app.log()


def test_two_channels_of_one_kind_deliver_independently(http: Recorder) -> None:
    """Two JSON channels on one host: each has its own destination and worker (one hanging channel
    delays no other)."""
    base = _base(http)
    first, second = AppriseSink(f"json://{base}/one"), AppriseSink(f"json://{base}/two")
    assert first.destination != second.destination and first.name == second.name
    router = AlertRouter(RouterSettings(), [first, second], replay=True)
    router.submit([n_plus_one()])
    assert router.flush(10)
    assert sorted(request["path"] for request in http.requests) == ["/one", "/two"]
    assert len({worker.name for worker in router._workers.values()}) == 1 and len(router._workers) == 2
    router.shutdown()


def test_webhook_min_severity_alone(http: Recorder) -> None:
    sink = WebhookSink(f"http://{_base(http)}/hook", min_severity=Severity.CRITICAL)
    router = AlertRouter(RouterSettings(), [sink], replay=True)
    router.submit([n_plus_one(Severity.HIGH)])
    assert router.flush(10)
    assert http.requests == []
    router.shutdown()
