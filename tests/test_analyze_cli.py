"""`otel-perf analyze FILE...`: OTLP JSON lines in, alerts as JSON lines out, time from the spans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.otlp import otlp_json_line

OTEL_PERF = str(Path(sys.executable).parent / "otel-perf")
BASE_NS = 1_735_689_600 * 10**9  # 2025-01-01T00:00:00Z: long before the test runs
MS = 10**6


def _request_with_n_plus_one(exporter_provider: TracerProvider, start_ns: int, customers: range) -> None:
    tracer = exporter_provider.get_tracer("test")
    root = tracer.start_span(
        "GET /orders",
        kind=SpanKind.SERVER,
        start_time=start_ns,
        attributes={"http.route": "/orders", "http.request.method": "GET"},
    )
    from opentelemetry import trace

    context = trace.set_span_in_context(root)
    at = start_ns + MS
    for customer in customers:
        # Stable semantic conventions, literals inlined: both must be handled.
        span = tracer.start_span(
            "SELECT shop",
            kind=SpanKind.CLIENT,
            context=context,
            start_time=at,
            attributes={
                "db.system.name": "postgresql",
                "db.query.text": f"SELECT * FROM customers WHERE id = {customer} "
                f"AND token = 'secret-{customer}'",
            },
        )
        span.end(end_time=at + 3 * MS)
        at += 4 * MS
    slow = tracer.start_span(
        "SELECT shop",
        kind=SpanKind.CLIENT,
        context=context,
        start_time=at,
        attributes={"db.system": "postgresql", "db.statement": "SELECT sum(total) FROM orders"},
    )
    slow.end(end_time=at + 250 * MS)
    root.end(end_time=at + 260 * MS)


def _export_file(tmp_path: Path, starts: list[int]) -> Path:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    lines = []
    for start in starts:
        exporter.clear()
        _request_with_n_plus_one(provider, start, range(1, 13))
        spans = exporter.get_finished_spans()
        # Like the file exporter: a trace's spans may arrive in several batches/lines.
        lines += [otlp_json_line(spans[:5]), otlp_json_line(spans[5:])]
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _analyze(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OTEL_PERF, "analyze", *args], capture_output=True, text=True, input=stdin, timeout=60
    )


def _alerts(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_analyze_reports_findings_with_span_time(tmp_path: Path) -> None:
    path = _export_file(tmp_path, [BASE_NS])
    result = _analyze(str(path))
    assert result.returncode == 0, result.stderr
    alerts = _alerts(result.stdout)
    assert {(alert["type"], alert["operation"]) for alert in alerts} == {
        ("n_plus_one", "GET /orders"),
        ("slow_span", "GET /orders"),
    }
    n_plus_one = next(alert for alert in alerts if alert["type"] == "n_plus_one")
    assert n_plus_one["details"]["count"] == 12
    assert n_plus_one["details"]["statement"] == "SELECT * FROM customers WHERE id = ? AND token = ?"
    assert n_plus_one["service"] == "billing" and n_plus_one["source"] == "offline"
    assert n_plus_one["time"].startswith("2025-01-01T00:00:00")
    assert "secret-" not in result.stdout
    assert "Read 14 spans in 1 traces" in result.stderr


def test_analyze_routes_like_live_traffic_using_span_time(tmp_path: Path) -> None:
    minute, hour = 60 * 10**9, 3600 * 10**9
    path = _export_file(tmp_path, [BASE_NS, BASE_NS + minute, BASE_NS + hour])
    deduped = _alerts(_analyze(str(path)).stdout)
    # Repeat a minute later: inside the 15-minute cooldown. An hour later: alerted again.
    assert [alert["time"][:16] for alert in deduped if alert["type"] == "n_plus_one"] == [
        "2025-01-01T00:00",
        "2025-01-01T01:00",
    ]
    everything = _alerts(_analyze(str(path), "--no-dedup").stdout)
    assert len([alert for alert in everything if alert["type"] == "n_plus_one"]) == 3


def test_analyze_skips_malformed_lines_names_them_and_keeps_the_rest(tmp_path: Path) -> None:
    good = _export_file(tmp_path, [BASE_NS]).read_text().splitlines()
    bad_id = json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc", "spanId": "00"}]}]}]}
    )
    text = "\n".join([good[0], "{not json", good[1], bad_id, ""])
    result = _analyze("-", stdin=text)
    assert result.returncode == 1
    assert "line 2: not JSON" in result.stderr
    assert "line 4: traceId must be 32 hex characters" in result.stderr
    assert len(_alerts(result.stdout)) == 2


def test_analyze_names_a_missing_file_and_a_bad_setting(tmp_path: Path) -> None:
    missing = _analyze(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "can't read" in missing.stderr
    import os

    bad = subprocess.run(
        [OTEL_PERF, "analyze", str(_export_file(tmp_path, [BASE_NS]))],
        capture_output=True,
        text=True,
        env={**os.environ, "OTEL_PERF_SLOW_SPAN_DB_MS": "-5"},
    )
    assert bad.returncode == 2 and "OTEL_PERF_SLOW_SPAN_DB_MS='-5' is invalid" in bad.stderr


def test_analyze_and_the_analyzer_agree_on_the_same_file(tmp_path: Path) -> None:
    """One decoding path: the lines `otel-perf analyze` reads, posted as OTLP/JSON to a running
    analyzer, give the same alerts (but for where they came from)."""
    import time

    import httpx

    from benchmarks.processes import analyzer, sink_collector
    from tests.support.apps import wait_until

    now = time.time_ns()
    path = _export_file(tmp_path, [now - 60 * 10**9, now - 30 * 10**9])
    offline = _alerts(_analyze(str(path)).stdout)
    assert {alert["type"] for alert in offline} == {"n_plus_one", "slow_span"}

    alerts_file = tmp_path / "analyzer-alerts.jsonl"
    # A collector to forward to: a request is answered once it is there, and the analyzer's stop
    # does not spend its delivery timeout on a dead port.
    with (
        sink_collector(tmp_path) as (sink_port, _),
        analyzer(
            tmp_path,
            sink_port,
            OTEL_PERF_ALERTS_OTLP="false",
            OTEL_PERF_ALERTS_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"),
            OTEL_PERF_MONITOR_STATE_PATH=str(tmp_path / "monitors.sqlite3"),
        ) as (_, http_port, _process),
    ):
        for line in path.read_text().splitlines():
            response = httpx.post(
                f"http://127.0.0.1:{http_port}/v1/traces",
                content=line,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        wait_until(
            lambda: alerts_file.exists() and len(alerts_file.read_text().splitlines()) >= len(offline),
            what="the analyzer's alerts",
        )
        time.sleep(0.5)  # nothing more arrives
        live = _alerts(alerts_file.read_text())

    def comparable(alerts: list[dict]) -> list[dict]:
        return sorted(
            ({key: value for key, value in alert.items() if key != "source"} for alert in alerts),
            key=lambda alert: alert["fingerprint"],
        )

    assert comparable(live) == comparable(offline)


def _hostile_run(
    tmp_path: Path, name: str, hostile: list[bytes], last: bytes = b""
) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """`otel-perf analyze` on a file of the two good lines of one N+1 request with `hostile` lines
    between them (and `last` after them, with no newline: a write cut short): the result and the
    numbers of the hostile lines."""
    good = _export_file(tmp_path, [BASE_NS]).read_bytes().splitlines()
    lines = [good[0], *hostile, good[1]] + ([last] if last else [])
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + (b"" if last else b"\n"))
    numbers = [*range(2, 2 + len(hostile))] + ([len(lines)] if last else [])
    return _analyze(str(path)), numbers


def _assert_named_once_and_the_rest_analysed(
    result: subprocess.CompletedProcess[str], numbers: list[int]
) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for number in numbers:
        assert result.stderr.count(f"line {number}:") == 1, (number, result.stderr)
    assert f"{len(numbers)} malformed line(s) skipped" in result.stderr
    assert {alert["type"] for alert in _alerts(result.stdout)} == {"n_plus_one", "slow_span"}


SPAN = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "x"}


def _line(**fields: object) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{**SPAN, **fields}]}]}]}).encode()


def test_analyze_names_every_hostile_line_and_analyses_the_rest(tmp_path: Path) -> None:
    """Too deep, not UTF-8, absurd timestamps, binary garbage, the wrong JSON shape, a last line cut
    short: each is a named, skipped line (exit 1), never a traceback, and the good lines are still
    analysed."""
    result, numbers = _hostile_run(
        tmp_path,
        "hostile.jsonl",
        [
            b"[" * 200_000,  # nested too deeply for any parser
            '{"resourceSpans": ["caf\xe9"]}'.encode("latin-1"),  # not UTF-8
            _line(startTimeUnixNano="9" * 40),  # a timestamp no clock has
            bytes(b for b in range(256) if b not in b"\r\n") * 4,  # binary, one line
            b'{"resourceSpans": {"not": "a list"}}',
            b'{"traces": []}',  # JSON, but no OTLP at all (was skipped without a word)
            b"[1, 2]",
        ],
        last=_line(name="cut")[:40],
    )
    _assert_named_once_and_the_rest_analysed(result, numbers)
    assert "not OTLP" in result.stderr and "not UTF-8" in result.stderr


def test_analyze_names_what_stopped_it_with_a_traceback_before(tmp_path: Path) -> None:
    """Lines the fuzzer found (tests/unit/test_hostile_input.py): JSON nested within what Python
    parses but past what the id conversion recursed through, a 5,000-digit number, a lone
    surrogate where an enum goes, and a link with an id of the wrong length (which the analyzer
    would have forwarded to a collector that refuses it)."""
    value = '{"arrayValue": {"values": [' * 300 + '{"stringValue": "x"}' + "]}}" * 300
    deep = _line(attributes=[{"key": "db.statement", "value": "VALUE"}]).replace(b'"VALUE"', value.encode())
    result, numbers = _hostile_run(
        tmp_path,
        "found.jsonl",
        [
            deep,
            _line(kind=1).replace(b'"kind": 1', b'"kind": ' + b"9" * 5000),
            _line(status={"code": "\ud800"}),
            _line(links=[{"traceId": "ab" * 15, "spanId": "cd" * 8}]),
        ],
    )
    _assert_named_once_and_the_rest_analysed(result, numbers)


def test_a_span_dated_2200_neither_breaks_the_replay_nor_hides_the_rest(tmp_path: Path) -> None:
    """A line whose times are valid numbers but absurd (year 2200, 1970, end before start) is read,
    not refused: the replay goes on, the findings of the other lines are all there, and the
    replay says what it did with the odd trace (its trends are another test's:
    tests/e2e/test_analyzer_clock.py)."""
    year_2200 = 7_258_118_400 * 10**9
    path = _export_file(tmp_path, [BASE_NS, BASE_NS + 3600 * 10**9, BASE_NS + 7200 * 10**9])
    odd = [
        _line(kind=2, startTimeUnixNano=str(year_2200), endTimeUnixNano=str(year_2200 + 10**6)),
        _line(kind=2, spanId="ce" * 8, startTimeUnixNano="0", endTimeUnixNano="1"),
        _line(kind=2, spanId="cf" * 8, startTimeUnixNano=str(BASE_NS), endTimeUnixNano=str(BASE_NS - 10**9)),
    ]
    path.write_bytes(path.read_bytes() + b"\n".join(odd) + b"\n")
    result = _analyze(str(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "dated far from the rest of the input" in result.stderr
    times = sorted(alert["time"][:13] for alert in _alerts(result.stdout) if alert["type"] == "n_plus_one")
    assert times == ["2025-01-01T00", "2025-01-01T01", "2025-01-01T02"]
