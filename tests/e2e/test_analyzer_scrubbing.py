"""The scrubbing corpus through the analyzer: spans whose statements and URLs carry secrets (the
literals of tests/support/secrets_corpus.py: SQL strings and numbers in every dialect's forms,
comments, statements cut short; passwords, tokens and query values in URLs) go over OTLP (protobuf
and JSON) into a real analyzer in the real stack. Each trace is an N+1 of slow queries or calls
with the secret: its findings are alerted everywhere the analyzer sends them (its alerts file, a
webhook, the alert span and log record it forwards through the collector to Jaeger, Alertmanager
and the collector's alert file), and no secret, nor a 6-character piece of one, is in any of them,
nor in the analyzer's log or metrics."""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.support.apps import wait_until
from tests.support.recorder import Recorder
from tests.support.secrets_corpus import CORPUS, leaked, random_token
from tests.support.stack import RunningStack, start_stack

SERVICE = "scrubbing"
REPEATS = 6  # an N+1 (5 or more) of slow calls (each over its threshold): both detectors report
MS = 10**6
# Fields not made from the input: left out, so that ids' and hashes' digits are not read as a
# number's, nor the analyzer's own words as pieces of a secret.
NOT_FROM_INPUT = {
    "trace_id",
    "span_ids",
    "fingerprint",
    "perf.issue.fingerprint",
    "traceID",
    "spanID",
    "TraceID",
    "SpanID",
    "trace_url",
    "generatorURL",
    "time",  # ISO times: their digits neither
    "source",  # "collector": its letters are not the input's (a secret "zqselectorders")
}


@dataclass
class Sent:
    trace_id: str
    secrets: tuple[str, ...]
    skeleton: str  # the statement or URL without its secrets: what the text may carry anyway
    what: str


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _trace(rng: random.Random, start: int, kind: str, statement_or_url: str, dialect: str = "") -> list[Span]:
    """A request making the same slow call `REPEATS` times, one after another."""
    trace_id, root_id = rng.randbytes(16), rng.randbytes(8)
    duration = 200 * MS if kind == "sql" else 1200 * MS
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name="GET /checkout/{id}",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + REPEATS * (duration + MS) + 10 * MS,
        attributes=[_kv("http.request.method", "GET"), _kv("http.route", "/checkout/{id}")],
    )
    spans = [root]
    for index in range(REPEATS):
        at = start + MS + index * (duration + MS)
        attributes = (
            [_kv("db.system", dialect), _kv("db.statement", statement_or_url)]
            if kind == "sql"
            else [_kv("http.request.method", "GET"), _kv("url.full", statement_or_url)]
        )
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=rng.randbytes(8),
                parent_span_id=root_id,
                name=statement_or_url.split(" ", 1)[0][:20] if kind == "sql" else "GET",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=at,
                end_time_unix_nano=at + duration,
                attributes=attributes,
            )
        )
    return spans


def _cases(rng: random.Random, now: int) -> list[tuple[Sent, list[Span]]]:
    cases = []
    start = now - 120 * 10**9
    for number, case in enumerate(CORPUS[::32]):
        spans = _trace(rng, start + number * 20 * MS, "sql", case.statement, case.dialect)
        cases.append((Sent(spans[0].trace_id.hex(), case.secrets, case.skeleton, case.statement), spans))
    for number in range(25):
        token, value = random_token(rng), random_token(rng)
        url = f"https://user:{value}@api.example.com/reset/{token}/confirm?key={value}#{value}"
        spans = _trace(rng, start + (200 + number) * 20 * MS, "url", url)
        skeleton = url.replace(token, " ").replace(value, " ")
        cases.append((Sent(spans[0].trace_id.hex(), (token, value), skeleton, url), spans))
    return cases


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex()
            if key in ("traceId", "spanId", "parentSpanId")
            else _hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


def _send(analyzer_url: str, batch: list[list[Span]], as_json: bool) -> None:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", SERVICE)]),
                scope_spans=[ScopeSpans(spans=[span for spans in batch for span in spans])],
            )
        ]
    )
    if as_json:
        response = httpx.post(f"{analyzer_url}/v1/traces", json=_hex_ids(MessageToDict(request)), timeout=30)
    else:
        response = httpx.post(
            f"{analyzer_url}/v1/traces",
            content=request.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=30,
        )
    assert response.status_code == 200, response.text


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_ids(item) for key, item in value.items() if key not in NOT_FROM_INPUT}
    if isinstance(value, list):
        return [_without_ids(item) for item in value]
    if isinstance(value, str) and value.startswith("{"):
        try:
            return _without_ids(json.loads(value))  # the alert's JSON on its log record
        except ValueError:
            return value
    return value


def _text(value: Any) -> str:
    return json.dumps(_without_ids(value), default=str, ensure_ascii=False)


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, Recorder, list[Sent]]]:
    """The stack, its analyzer alerting every finding (no cooldown, no hourly limit) to its file, a
    webhook and OTLP; the corpus sent to it once."""
    recorder = Recorder()
    stack = start_stack(
        tmp_path_factory.mktemp("stack"),
        analyzer_env={
            "OTEL_PERF_ALERTS_WEBHOOK_URL": recorder.url,
            "OTEL_PERF_ALERTS_COOLDOWN_S": "0",
            "OTEL_PERF_ALERTS_MAX_PER_HOUR": "100000",
        },
    )
    try:
        analyzer_url = f"http://127.0.0.1:{stack.ports.analyzer(0)[1]}"
        cases = _cases(random.Random(20261129), time.time_ns())
        for number in range(0, len(cases), 25):
            _send(
                analyzer_url, [spans for _, spans in cases[number : number + 25]], as_json=number % 50 == 25
            )
        yield stack, recorder, [sent for sent, _ in cases]
    finally:
        stack.stack.down()
        recorder.close()


def _by_trace(items: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [item for item in items if item.get("trace_id") == trace_id]


def _all_there(sent: list[Sent], alerts: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """`alerts`, once they hold an N+1 and a slow span of every trace sent."""
    types: dict[str, set[str]] = {}
    for alert in alerts:
        types.setdefault(alert.get("trace_id") or "", set()).add(alert.get("type") or "")
    complete = all(types.get(each.trace_id) == {"n_plus_one", "slow_span"} for each in sent)
    return alerts if complete else None


def _check(sent: list[Sent], where: str, found: dict[str, list[dict[str, Any]]]) -> None:
    """Each trace's findings are there, and none of its secrets."""
    missing = [each.what for each in sent if not found.get(each.trace_id)]
    assert not missing, f"{where}: no alert for {len(missing)} trace(s), e.g. {missing[:3]}"
    leaks = []
    for each in sent:
        text = _text(found[each.trace_id])
        leaks += [
            (each.what, leak) for secret in each.secrets if (leak := leaked(secret, text, each.skeleton))
        ]
    assert not leaks, f"{where}: {len(leaks)} secret(s) leaked, e.g. {leaks[:3]}"


def test_the_analyzers_alerts_file_and_webhook_carry_the_findings_and_no_secret(
    received: tuple[RunningStack, Recorder, list[Sent]],
) -> None:
    stack, recorder, sent = received
    wait_until(lambda: _all_there(sent, stack.analyzer_alerts()), timeout=60, what="every alert in the file")
    posted = wait_until(
        lambda: _all_there(sent, [request["json"] for request in recorder.requests]),
        timeout=60,
        what="every alert at the webhook",
    )
    alerts = stack.analyzer_alerts()
    for each in sent:
        assert {alert["type"] for alert in _by_trace(alerts, each.trace_id)} == {"n_plus_one", "slow_span"}
    _check(sent, "alerts file", {each.trace_id: _by_trace(alerts, each.trace_id) for each in sent})
    _check(sent, "webhook", {each.trace_id: _by_trace(posted, each.trace_id) for each in sent})


def test_the_alert_records_and_spans_forwarded_through_the_collector_carry_no_secret(
    received: tuple[RunningStack, Recorder, list[Sent]],
) -> None:
    stack, _, sent = received
    expected = 2 * len(sent)
    records = wait_until(
        lambda: (
            (found := stack.alert_records(SERVICE))
            and len(found) >= expected
            and all(_by_trace(found, each.trace_id) for each in sent)  # a count alone can hold repeats
            and found
        ),
        timeout=60,
        what="every alert record in the collector's file",
    )
    _check(sent, "alert log records", {each.trace_id: _by_trace(records, each.trace_id) for each in sent})

    def alert_spans(trace_id: str) -> list[dict[str, Any]]:
        """The trace's perf.alert spans and the marks on its flagged spans (the spans themselves
        carry the app's own statement: that is the app's data, not something the analyzer made)."""
        trace = stack.jaeger_trace(trace_id) or {"spans": []}
        found = []
        for span in trace["spans"]:
            tags = {tag["key"]: tag["value"] for tag in span.get("tags", [])}
            if span["operationName"] == "perf.alert":
                fields = [{f["key"]: f["value"] for f in log["fields"]} for log in span.get("logs", [])]
                found.append({"tags": tags, "events": fields})
            elif "perf.issue" in tags:
                found.append({key: value for key, value in tags.items() if key.startswith("perf.")})
        return found

    def every_trace_has_its_alert_spans() -> dict[str, list[dict[str, Any]]] | None:
        spans = {each.trace_id: alert_spans(each.trace_id) for each in sent}
        complete = all(sum("events" in span for span in found) >= 2 for found in spans.values())
        return spans if complete else None

    spans = wait_until(
        every_trace_has_its_alert_spans, timeout=60, interval=1, what="the alert spans in Jaeger"
    )
    _check(sent, "Jaeger", spans)

    # Alertmanager keeps one alert per label set, and the labels name the finding's template: the
    # traces of one template share an alert there, which must carry none of their secrets.
    fingerprints: dict[str, set[str]] = {}
    for alert in stack.analyzer_alerts():
        fingerprints.setdefault(alert["trace_id"], set()).add(alert["fingerprint"])

    def in_alertmanager() -> dict[str, list[dict[str, Any]]] | None:
        by_fingerprint: dict[str, list[dict[str, Any]]] = {}
        for alert in stack.alertmanager_alerts(SERVICE):
            by_fingerprint.setdefault(alert["annotations"].get("perf.issue.fingerprint", ""), []).append(
                {"labels": alert["labels"], "annotations": alert["annotations"]}
            )
        wanted = set().union(*fingerprints.values())
        return by_fingerprint if wanted <= set(by_fingerprint) else None

    by_fingerprint = wait_until(in_alertmanager, timeout=60, interval=1, what="every finding in Alertmanager")
    by_trace = {
        trace_id: [alert for fingerprint in found for alert in by_fingerprint[fingerprint]]
        for trace_id, found in fingerprints.items()
    }
    _check(sent, "Alertmanager", by_trace)


def test_the_analyzers_log_and_metrics_carry_no_secret(
    received: tuple[RunningStack, Recorder, list[Sent]],
) -> None:
    stack, _, sent = received
    wait_until(lambda: len(stack.analyzer_alerts()) >= 2 * len(sent), timeout=60, what="every alert")
    metrics = httpx.get(f"http://127.0.0.1:{stack.ports.analyzer(0)[1]}/metrics", timeout=5).text
    log = Path(stack.stack.state_dir / "analyzer-1.log").read_text(errors="replace")
    everything = metrics + log
    own_words = " collector"  # in its metrics' help and its log: "lector" is no piece of "zqselectorders"
    leaks = [
        (each.what, leak)
        for each in sent
        for secret in each.secrets
        if (leak := leaked(secret, everything, each.skeleton + own_words))
    ]
    assert not leaks, leaks[:3]
    assert "Traceback" not in log, log[-5000:]
