"""`otel-perf report`: the HTML page a person opens, checked in a real browser.

Real input: the demo shop under `opentelemetry-instrument`, its traces through the real collector's
file exporter (OTLP JSON lines) and its alerts from the file sink (N+1s, a slow query, memory over
a level set below what any host uses), plus days of exported traffic with a release, replayed by
`otel-perf analyze` (a trend and an error-rate alert naming the release). The report is built by
the real CLI and opened in headless Chromium (Debian's `chromium`, installed by scripts/test): the
page renders, its charts have data, the N+1 table names the endpoint and the fix, a waterfall shows
the offending trace, no SQL literal of the input appears, and the screenshot is not blank.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.detection.traffic import HOUR_NS, Traffic, otlp_json_lines
from tests.support.apps import RunningApp, start_app, wait_until
from tests.support.file_collector import FileCollector

OTEL_PERF = str(Path(sys.executable).parent / "otel-perf")
STATUS_WORDS = ("EXCELLENT", "GOOD", "DEGRADED", "CRITICAL")
SHOP_PATHS = [
    "/healthz",
    "/orders",
    "/orders/eager",
    "/reports/order-lines",
    "/reports/revenue",
    "/stock/sequential",
]
# Four days of traffic, ending before the shop runs; version 1.5.0 from the fourth day on.
TRAFFIC_HOURS, RELEASE_HOUR = 24 * 4, 24 * 3


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "chromium is not installed: the report tests open the page in headless Chromium "
            "(Debian package `chromium`, which scripts/test installs: apt-get install chromium)"
        )
    return found


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on `page` (a fresh profile: runs in parallel never share one)."""
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-background-networking",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _dom(page: Path, tmp: Path) -> str:
    result = _browse(page, tmp / "profile-dom", "--dump-dom")
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-3000:]
    return result.stdout


def _screenshot(page: Path, tmp: Path) -> bytes:
    picture = tmp / "report.png"
    result = _browse(page, tmp / "profile-shot", f"--screenshot={picture}", "--window-size=1280,2000")
    assert result.returncode == 0 and picture.is_file(), result.stderr[-3000:]
    return picture.read_bytes()


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, RGB rows) of an 8-bit, non-interlaced RGB/RGBA PNG, with the stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, compressed = 8, []
    width = height = depth = color = interlace = -1
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed.append(body)
    assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(compressed))
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 255
        elif kind == 2:  # Up
            line = bytearray((a + b) & 255 for a, b in zip(line, previous, strict=True))
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rgb = b"".join(bytes(line[i : i + 3]) for i in range(0, stride, channels))
        rows.append(rgb)
        previous = line
    return width, height, rows


def _text_of(dom: str, table_class: str) -> str:
    """The visible text of the first `<table class="…">`, entities decoded."""
    match = re.search(rf'<table class="{table_class}">(.*?)</table>', dom, re.S)
    assert match, f"no table of class {table_class!r} in the page"
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def _clean_env(tmp: Path) -> dict[str, str]:
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
        "XDG_STATE_HOME": str(tmp / "state"),
    }


def _otel_perf(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OTEL_PERF, *args], capture_output=True, text=True, timeout=120, env=_clean_env(tmp), check=False
    )


@dataclass
class Made:
    tmp: Path
    spans: Path  # the shop's traces, from the collector
    traffic: Path  # four days of exported traffic with a release
    app_alerts: Path  # the shop's alerts (file sink)
    analysed_alerts: Path  # `otel-perf analyze traffic.jsonl`
    report: Path
    stderr: str
    seconds: float

    def app_alert_list(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.app_alerts.read_text().splitlines() if line.strip()]


def _drive(app: RunningApp) -> None:
    with httpx.Client(base_url=app.base_url, timeout=30) as client:
        for _ in range(2):
            for path in SHOP_PATHS:
                client.get(path).raise_for_status()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    """Everything the report is built from, made once, and the report the real CLI built from it."""
    tmp = tmp_path_factory.mktemp("report")
    began = time.monotonic()
    collector = FileCollector(tmp / "collector")
    app: RunningApp | None = None
    try:
        app = start_app(
            tmp / "shop",
            "instrument",
            export={
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            },
            env={
                "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.5.0",
                "OTEL_PERF_MONITOR_STATE_PATH": str(tmp / "shop-monitors.sqlite3"),
                # Memory alerts: a level below what any host uses, judged over one-second windows.
                "OTEL_PERF_RESOURCE_MEMORY_PERCENT": "1",
                "OTEL_PERF_RESOURCE_CPU_PERCENT": "100",
                "OTEL_PERF_RESOURCE_WINDOW_S": "1",
                "OTEL_PERF_MONITOR_LATENESS_S": "0.5",
                "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.1",
            },
        )
        _drive(app)
        shop = app
        wait_until(
            lambda: {"n_plus_one", "slow_span", "resource"} <= {alert["type"] for alert in shop.alerts()},
            timeout=20,
            what="the shop's N+1, slow-query and memory alerts",
        )
        app.stop()  # flushes its spans to the collector
    finally:
        if app is not None:
            app.stop()
        collector.stop()
    spans = collector.spans_file
    assert spans.is_file() and spans.stat().st_size > 0, collector.log_path.read_text()[-3000:]

    # The days before: hourly traffic ending before the shop's requests, 1.5.0 released on day 4.
    now_ns = time.time_ns()
    start_ns = (now_ns // HOUR_NS - TRAFFIC_HOURS) * HOUR_NS
    traffic = tmp / "traffic.jsonl"
    history = Traffic(start_ns=start_ns, hours=TRAFFIC_HOURS, release_at_hour=RELEASE_HOUR)
    traffic.write_text("".join(line + "\n" for line in otlp_json_lines(history)))
    analysed = _otel_perf(tmp, "analyze", "--no-summary", str(traffic))
    assert analysed.returncode == 0, analysed.stderr
    analysed_alerts = tmp / "analysed.jsonl"
    analysed_alerts.write_text(analysed.stdout)

    report = tmp / "report.html"
    result = _otel_perf(
        tmp,
        "report",
        "--alerts",
        str(app.alerts_file),
        "--alerts",
        str(analysed_alerts),
        "--traces",
        str(traffic),
        "--traces",
        str(spans),
        "-o",
        str(report),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    yield Made(
        tmp, spans, traffic, app.alerts_file, analysed_alerts, report, result.stderr, time.monotonic() - began
    )


def _raw_statements(spans: Path) -> list[str]:
    """Every SQL statement in the exported spans, as the app sent it (literals and all)."""
    found = []
    for line in spans.read_text().splitlines():
        for resource in json.loads(line).get("resourceSpans", ()):
            for scope in resource.get("scopeSpans", ()):
                for span in scope.get("spans", ()):
                    for attribute in span.get("attributes", ()):
                        if attribute["key"] in ("db.statement", "db.query.text"):
                            found.append(attribute["value"]["stringValue"])
    return found


def test_the_report_renders_in_a_browser_with_health_charts_offenders_and_no_literal(made: Made) -> None:
    page = made.report.read_text()
    # Self-contained: nothing is fetched (the only URL is the SVG namespace).
    assert not re.findall(r'(?:src|href)="(?!#)', page), "the page loads something from outside"
    assert "<script" not in page

    dom = _dom(made.report, made.tmp)
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and title.group(1).startswith("otel-perf report — shop")
    status = re.search(r'<div class="status">(\w+)</div>', dom)
    assert status and status.group(1) in STATUS_WORDS and status.group(1) in title.group(1)
    health = _text_of(dom, "components")
    for component in ("Requests", "Queries & calls", "Latency", "System"):
        assert component in health, health

    # Charts: three per endpoint, each with a data path; the busiest endpoints are the traffic's.
    charts = re.findall(r'<svg class="chart".*?</svg>', dom, re.S)
    assert len(charts) >= 9, len(charts)
    paths = re.findall(r'<path class="series" data-series="([^"]+)" d="(M[^"]+)"', dom)
    drawn = {series for series, d in paths if d.count("L") >= 10}
    assert {"p50", "p95", "p99", "errors", "requests"} <= drawn, drawn
    for endpoint in ("GET /orders/{order_id}", "POST /orders", "GET /reports/order-lines"):
        assert f'data-endpoint="{endpoint}"' in dom, endpoint
    # The release (a service.version change in the traces) and the trend's change point are marked.
    assert re.search(r'class="mark mark-version"><title>v1\.5\.0</title>', dom)
    assert re.search(r'class="mark mark-change"><title>p95 \+\d+ %</title>', dom)
    trends = _text_of(dom, "trends")
    assert "GET /orders/{order_id}" in trends and "1.5.0" in trends, trends

    # N+1 offenders: the endpoints, and the fix each alert carried.
    offenders = _text_of(dom, "offenders")
    app_alerts = made.app_alert_list()
    for operation in ("GET /orders", "GET /reports/order-lines", "GET /stock/sequential"):
        alert = next(a for a in app_alerts if a["type"] == "n_plus_one" and a["operation"] == operation)
        assert operation in offenders
        assert alert["details"]["suggestion"] in " ".join(offenders.split()), alert["details"]["suggestion"]
        location = alert["details"].get("code_location")
        if location and location.get("file"):
            assert location["file"] in offenders
    # A waterfall of the worst offender's trace, its repeated spans drawn as such.
    waterfall = re.search(r'<svg class="waterfall".*?</svg>', dom, re.S)
    assert waterfall and waterfall.group(0).count('class="span span-offender"') >= 10

    # Slow queries: the revenue report's query as a template; resources: the memory alerts.
    slow = _text_of(dom, "slow")
    assert "GET /reports/revenue" in slow and "WITH RECURSIVE" in slow, slow
    assert "memory" in _text_of(dom, "resources")

    # No literal of the input's SQL (nor of its URLs) anywhere in the page.
    statements = _raw_statements(made.spans)
    with_literals = [s for s in statements if re.search(r"= \d|< \d", s)]
    assert any("order_id = " in s for s in with_literals), "the shop's literal-bearing SQL is missing"
    text = html.unescape(dom)
    for statement in with_literals:
        assert statement not in text, statement
    assert not re.search(r"order_id = \d", text)
    assert "1500000" not in text and "SKU-00" not in text

    # The screenshot: a page, not a blank.
    width, height, rows = _png_pixels(_screenshot(made.report, made.tmp))
    assert (width, height) == (1280, 2000)
    colours: set[bytes] = set()
    coloured = 0
    for row in rows[::4]:
        for x in range(0, len(row), 12):
            pixel = row[x : x + 3]
            colours.add(pixel)
            coloured += pixel != b"\xff\xff\xff"
    sampled = len(rows[::4]) * (len(rows[0]) // 12)
    assert len(colours) > 50, len(colours)
    assert coloured > sampled * 0.05, (coloured, sampled)


def test_traces_alone_are_analysed_as_analyze_does(made: Made) -> None:
    """Without --alerts the report's findings are `otel-perf analyze`'s for the same traces."""
    page = made.tmp / "traces-only.html"
    result = _otel_perf(made.tmp, "report", "--traces", str(made.spans), "-o", str(page))
    assert result.returncode == 0, result.stderr
    analysed = _otel_perf(made.tmp, "analyze", "--no-summary", str(made.spans))
    expected = {
        alert["operation"]
        for alert in (json.loads(line) for line in analysed.stdout.splitlines())
        if alert["type"] == "n_plus_one"
    }
    assert {"GET /orders", "GET /reports/order-lines"} <= expected
    dom = _dom(page, made.tmp / "traces-only")
    offenders = _text_of(dom, "offenders")
    for operation in expected:
        assert operation in offenders
    assert "from analysing the traces" in dom
    assert "1500000" not in html.unescape(dom)


def test_alerts_alone_and_bad_input(made: Made, tmp_path: Path) -> None:
    """Alerts alone give a page (charts need traces, and it says so); no input, a missing file or a
    malformed line are named in one line, never a traceback."""
    page = tmp_path / "alerts-only.html"
    broken = tmp_path / "alerts.jsonl"
    # An alert file anyone could have edited: markup in its texts, values of the wrong type.
    hostile = {
        "type": "n_plus_one",
        "severity": "bogus",
        "operation": "<script>document.title='pwned'</script>",
        "trace_id": "zz",
        "span_ids": "abc",
        "occurrences": "many",
        "details": {"count": "x", "suggestion": "<img src=x onerror=alert(1)>", "code_location": "nope"},
    }
    broken.write_text(made.app_alerts.read_text() + json.dumps(hostile) + "\n{not json\n[1, 2]\n")
    result = _otel_perf(tmp_path, "report", "--alerts", str(broken), "-o", str(page))
    assert result.returncode == 1, result.stderr
    assert "line" in result.stderr and "not JSON" in result.stderr and "not an alert" in result.stderr
    assert "2 malformed line(s) skipped" in result.stderr
    dom = _dom(page, tmp_path)
    assert re.search(r'<div class="status">(\w+)</div>', dom).group(1) in STATUS_WORDS  # type: ignore[union-attr]
    assert "Charts per endpoint need traces" in dom
    assert "GET /orders" in _text_of(dom, "offenders")
    assert "<script" not in dom and "<img" not in dom and "pwned" not in dom.split("</title>")[0]
    assert "<img src=x onerror=alert(1)>" in _text_of(dom, "offenders")  # shown as text

    nothing = _otel_perf(tmp_path, "report", "-o", str(page))
    assert (
        nothing.returncode == 2
        and "give --alerts FILE" in nothing.stderr
        and "Traceback" not in nothing.stderr
    )
    missing = _otel_perf(tmp_path, "report", "--traces", str(tmp_path / "nope.jsonl"), "-o", str(page))
    assert missing.returncode == 2 and "can't read" in missing.stderr and "nope.jsonl" in missing.stderr
    unwritable = _otel_perf(
        tmp_path, "report", "--alerts", str(made.app_alerts), "-o", str(tmp_path / "no-dir" / "r.html")
    )
    assert unwritable.returncode == 2 and "can't write" in unwritable.stderr
