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


# --- CI gates, the inputs users really have, progress, `demo --save` (issue 17) ---------------------


def _findings(stdout: str) -> list[tuple[str, str, str, object]]:
    return sorted(
        (alert["type"], alert["severity"], alert["operation"], alert["details"].get("count"))
        for alert in _alerts(stdout)
    )


def test_fail_on_exits_3_at_or_above_the_severity_and_0_below(tmp_path: Path) -> None:
    """The file's alerts: one low (a 12-query N+1), one medium (a 250 ms query). --fail-on high
    passes; medium and low fail with status 3, the last line saying why; with a malformed line too,
    3 wins over 1 and both are said."""
    path = _export_file(tmp_path, [BASE_NS])
    below = _analyze(str(path), "--fail-on", "high")
    assert below.returncode == 0, below.stderr
    assert "passed (--fail-on high): no alert at or above high (2 below)" in below.stderr
    at = _analyze(str(path), "--fail-on", "medium")
    assert at.returncode == 3, at.stderr
    assert at.stderr.splitlines()[-1] == (
        "otel-perf analyze: failed (--fail-on medium): 1 alert(s) at or above medium (1 medium)."
    )
    above = _analyze(str(path), "--fail-on", "low", "--no-summary")
    assert above.returncode == 3
    assert "2 alert(s) at or above low (1 medium, 1 low)" in above.stderr
    assert len(_alerts(above.stdout)) == 2  # the alerts are all written, whatever the verdict
    with_bad_line = _analyze("-", "--fail-on", "low", stdin=path.read_text() + "{not json\n")
    assert with_bad_line.returncode == 3
    assert (
        "1 malformed line(s) skipped." in with_bad_line.stderr
        and "failed (--fail-on low)" in with_bad_line.stderr
    )
    assert _analyze("-", "--fail-on", "critical", stdin=path.read_text() + "{x\n").returncode == 1
    wrong = _analyze(str(path), "--fail-on", "severe")
    assert wrong.returncode == 2 and "invalid choice: 'severe'" in wrong.stderr
    assert (
        "3 with --fail-on"
        in subprocess.run([OTEL_PERF, "analyze", "--help"], capture_output=True, text=True, check=True).stdout
    )


def test_a_file_without_otlp_trace_lines_is_named_and_fails(tmp_path: Path) -> None:
    """Empty, CSV, metrics only, Zipkin v2 JSON: status 2 and what the file looks like instead,
    never "no findings" (which a CI gate would take for a pass)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    csv = tmp_path / "spans.csv"
    csv.write_text("trace_id,span_id,name,duration_ms\nab12,cd34,GET /orders,12\n")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"resourceMetrics": []}) + "\n")
    zipkin = tmp_path / "zipkin.json"
    zipkin.write_text(
        json.dumps(
            [
                {
                    "traceId": "ab" * 16,
                    "id": "cd" * 8,
                    "name": "get /orders",
                    "kind": "SERVER",
                    "timestamp": BASE_NS // 1000,
                    "duration": 1200,
                    "localEndpoint": {"serviceName": "billing"},
                }
            ],
            indent=2,
        )
    )
    expected = {
        empty: "the file is empty",
        csv: "it looks like CSV or text (first line: 'trace_id,span_id,name,duration_ms')",
        metrics: "it holds OTLP metrics or logs only",
        zipkin: "it looks like Zipkin v2 JSON (a list of spans with traceId, id, localEndpoint)",
    }
    for path, what in expected.items():
        result = _analyze(str(path))
        assert result.returncode == 2, (path, result.stderr)
        assert f"otel-perf: no OTLP trace lines found in {path}: {what}" in result.stderr, result.stderr
        assert "file exporter" in result.stderr and "Traceback" not in result.stderr
    from_stdin = _analyze("-", stdin="")
    assert from_stdin.returncode == 2 and "no OTLP trace lines found in <stdin>" in from_stdin.stderr


def test_protobuf_json_with_base64_ids_gives_the_findings_of_hex_ids(tmp_path: Path) -> None:
    """What protobuf's own `MessageToDict`/`MessageToJson` write: ids in base64, not OTLP/JSON's
    hex; one request per line, or one indented document."""
    from google.protobuf.json_format import MessageToDict, MessageToJson
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "billing"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _request_with_n_plus_one(provider, BASE_NS, range(1, 13))
    spans = exporter.get_finished_spans()
    hex_file = tmp_path / "hex.jsonl"
    hex_file.write_text(otlp_json_line(spans) + "\n")
    base64_lines = tmp_path / "base64.jsonl"
    base64_lines.write_text(
        "\n".join(json.dumps(MessageToDict(encode_spans(part))) for part in (spans[:5], spans[5:])) + "\n"
    )
    assert '"traceId": "' in base64_lines.read_text() and "==" in base64_lines.read_text()
    indented = tmp_path / "message.json"
    indented.write_text(MessageToJson(encode_spans(spans)))
    expected = _findings(_analyze(str(hex_file)).stdout)
    assert [finding[0] for finding in expected] == ["n_plus_one", "slow_span"]
    for path in (base64_lines, indented):
        result = _analyze(str(path))
        assert result.returncode == 0, result.stderr
        assert _findings(result.stdout) == expected
        assert "Read 14 spans in 1 traces" in result.stderr


def test_jaeger_json_from_a_real_jaeger_is_analysed_like_the_otlp_it_came_from(tmp_path: Path) -> None:
    """The OTLP lines posted to a real Jaeger, downloaded back from its query API as Jaeger's JSON
    (what its UI downloads): accepted, converted to OTLP JSON and decoded like any line, with the
    same findings."""
    import httpx

    from otel_perf.stack.rig import Stack, StackPorts
    from tests.support.apps import wait_until

    path = _export_file(tmp_path, [BASE_NS])
    trace_id = json.loads(path.read_text().splitlines()[0])["resourceSpans"][0]["scopeSpans"][0]["spans"][0][
        "traceId"
    ]
    stack = Stack(tmp_path / "rig", StackPorts.free())
    jaeger = stack.service("jaeger")
    log = (tmp_path / "jaeger.log").open("w")
    process = subprocess.Popen(jaeger.argv, env=jaeger.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(jaeger.health_url), timeout=60, what="Jaeger")
        for line in path.read_text().splitlines():
            response = httpx.post(
                f"http://127.0.0.1:{stack.ports.jaeger_otlp_http}/v1/traces",
                content=line,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        query = f"http://127.0.0.1:{stack.ports.jaeger_query}/api/traces/{trace_id}"

        def whole_trace() -> str | None:
            response = httpx.get(query, timeout=10)
            if response.status_code != 200 or len(response.json()["data"][0]["spans"]) < 14:
                return None
            return response.text

        download = wait_until(whole_trace, what="the trace in Jaeger")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
    jaeger_file = tmp_path / "jaeger-trace.json"
    jaeger_file.write_text(json.dumps(json.loads(download), indent=2))  # the UI's download is indented
    result = _analyze(str(jaeger_file))
    assert result.returncode == 0, result.stderr
    assert _findings(result.stdout) == _findings(_analyze(str(path)).stdout)
    assert "Read 14 spans in 1 traces" in result.stderr
    one_line = _analyze("-", stdin=download)  # the query API's answer, as is
    assert one_line.returncode == 0 and _findings(one_line.stdout) == _findings(result.stdout)
    nothing = _analyze("-", stdin=json.dumps({"data": [], "total": 0}))
    assert nothing.returncode == 2 and "it is Jaeger's JSON" in nothing.stderr


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_progress_on_a_terminal_and_nothing_otherwise(tmp_path: Path) -> None:
    """stderr a terminal: a progress line (lines, MB/s, traces analysed), wiped before anything else
    is written. Not a terminal (every other test here): not a byte of it."""
    import os
    import pty

    path = _export_file(tmp_path, [BASE_NS, BASE_NS + 3600 * 10**9])
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [OTEL_PERF, "analyze", str(path), "--no-summary"], stdout=subprocess.PIPE, stderr=terminal
    )
    os.close(terminal)
    out, _ = process.communicate(timeout=60)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)
    assert process.returncode == 0, screen
    text = screen.decode()
    assert "Read 4 lines, 0.0 MB (" in text and " MB/s)" in text, text
    assert "Analysed 2 of 2 traces" in text, text
    assert "\r\x1b[K" in text
    assert len(_alerts(out.decode())) == 4
    plain = _analyze(str(path))
    assert "MB/s" not in plain.stderr and "\x1b[K" not in plain.stderr and "Analysed" not in plain.stderr


def test_demo_save_writes_otlp_lines_analyze_finds_the_demo_problems_in(tmp_path: Path) -> None:
    """`otel-perf demo --save FILE` (without the release step, the demo's short mode): the shop's
    own exports, as OTLP JSON lines, in which `otel-perf analyze` finds what the demo showed."""
    import os

    saved = tmp_path / "traces.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    demo = subprocess.run(
        [OTEL_PERF, "demo", "--no-release", "--rounds", "1", "--save", str(saved)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COLUMNS": "200"},
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"otel-perf analyze {saved}" in demo.stdout
    result = _analyze(str(saved), "--fail-on", "low")
    assert result.returncode == 3, result.stderr
    alerts = _alerts(result.stdout)
    n_plus_one = {
        alert["operation"]: alert["details"]["count"] for alert in alerts if alert["type"] == "n_plus_one"
    }
    assert n_plus_one["GET /orders"] == 25 and n_plus_one["GET /reports/order-lines"] == 20
    assert n_plus_one["GET /stock/sequential"] == 8 and n_plus_one["GET /stock/parallel"] == 8
    from otel_perf.demo.runner import EXPECTED_FINDINGS

    assert {alert["operation"] for alert in alerts} == EXPECTED_FINDINGS
    assert "Traceback" not in result.stderr
