"""The Grafana dashboards and the Alertmanager message templates of deploy/ against the real stack.

Dashboards: well-formed Grafana JSON, every PromQL expression parsed by a real PromQL parser, and
every selector matched against what the real processes export after real traffic (the gateway
collector's prometheus exporter with spanmetrics and the apps' metrics, its own telemetry, the
analyzer's /metrics, Alertmanager's /metrics): a metric or label the stack does not export is a
panel that stays empty. No Prometheus runs here (the toolchain does not build it), so the
selectors are matched in Python, with Prometheus' matcher semantics.

Alert templates: collector/alertmanager.yml's commented Slack receiver, uncommented and pointed
at a local recorder, gets a real otel-perf alert (app → collector → Alertmanager) and the
message Alertmanager renders through collector/alertmanager.tmpl is read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from otel_perf.stack.toolchain import ensure_binary
from tests.support.apps import RunningApp, drive_shop, free_port, start_app, wait_until
from tests.support.recorder import Recorder
from tests.support.stack import RunningStack, start_stack

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR_DIR = ROOT / "collector"
GRAFANA = ROOT / "deploy" / "compose" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALERTMANAGER_CONFIG = COLLECTOR_DIR / "alertmanager.yml"

# Grafana's core panel types (a plugin panel would need installing in the compose image).
CORE_PANELS = {
    "row", "timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap", "histogram",
    "piechart", "barchart", "state-timeline", "status-history", "logs", "traces", "nodeGraph",
    "alertlist", "dashlist", "news", "annolist", "candlestick", "trend", "xychart", "geomap", "canvas",
}  # fmt: skip
# Grafana's built-in variables, replaced by a value of their kind before parsing.
BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__interval_ms": "60000"}
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^label_values\((?:(.*),\s*)?(\w+)\)$", re.S)
# Added by Prometheus to every scraped series (the spanmetrics job keeps the exporter's own).
TARGET_LABELS = {"job", "instance"}


# --------------------------------------------------------------------------------------------- model


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/otel-perf.yaml").read_text())
    return {source["uid"]: source for source in sources["datasources"]}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data: rows left out, the panels of collapsed rows included."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = dashboard.get("templating", {}).get("list", [])
    return listed


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


@dataclass
class Query:
    """One PromQL expression of a dashboard, with the variables Grafana would substitute."""

    where: str
    text: str
    selector_only: bool = False  # a variable's label_values(selector, label)
    label: str | None = None

    def promql(self, defined: set[str]) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = next(group for group in match.groups() if group)
            if name in BUILTINS:
                return BUILTINS[name]
            assert name in defined, f"{self.where}: ${name} is not a variable of the dashboard"
            # Multi-value and "All": Grafana writes a regex alternation, so only regex matchers fit.
            before = self.text[: match.start()]
            assert before.endswith('=~"'), f"{self.where}: ${name} outside a regex matcher (=~)"
            return ".*"

        return VARIABLE.sub(substitute, self.text)


def queries(dashboard: dict[str, Any]) -> list[Query]:
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append(Query(f"{dashboard['uid']}: {panel['title']} {target['refId']}", target["expr"]))
    for variable in variables(dashboard):
        match = LABEL_VALUES.match(variable_query(variable).strip())
        assert match, f"{dashboard['uid']}: variable {variable['name']}: {variable_query(variable)}"
        selector, label = match.groups()
        assert selector, f"{dashboard['uid']}: variable {variable['name']} names no metric"
        found.append(Query(f"{dashboard['uid']}: variable ${variable['name']}", selector, True, label))
    return found


def parse(query: Query, defined: set[str]) -> Any:
    try:
        return promql_parser.parse(query.promql(defined))
    except ValueError as error:
        raise AssertionError(f"{query.where}: {error}\n{query.text}") from None


def dashboard_params() -> list[Any]:
    return [pytest.param(path, id=path.name) for path in DASHBOARDS]


# --------------------------------------------------------------------------------------------- static


def test_there_are_the_red_and_the_health_dashboards() -> None:
    assert {load(path)["uid"] for path in DASHBOARDS} == {"otel-perf-red", "otel-perf-health"}


@pytest.mark.parametrize("path", dashboard_params())
def test_dashboard_is_well_formed_grafana_json(path: Path) -> None:
    dashboard = load(path)
    sources = provisioned_datasources()
    uids = {load(other)["uid"] for other in DASHBOARDS}
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]] + [
        panel["id"] for row in dashboard["panels"] for panel in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"

    # The grid: 24 columns, no two panels on the same cell.
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        assert panel["type"] in CORE_PANELS, f"{path.name}: {panel['title']}: type {panel['type']}"
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{path.name}: {panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]

    # Each panel queries a provisioned datasource of the type it names, each query the panel's.
    for panel in panels(dashboard):
        where = f"{path.name}: {panel['title']}"
        source = panel["datasource"]
        assert source["uid"] in sources, f"{where}: datasource {source} is not provisioned"
        assert source["type"] == sources[source["uid"]]["type"], where
        targets = panel["targets"]
        assert targets, f"{where}: no query"
        assert len({target["refId"] for target in targets}) == len(targets), f"{where}: duplicate refId"
        for target in targets:
            assert target.get("datasource", source) == source, f"{where} {target['refId']}"
            assert target["expr"].strip(), f"{where} {target['refId']}: empty query"
    for variable in variables(dashboard):
        assert variable["datasource"]["uid"] in sources, f"{path.name}: ${variable['name']}"
        assert variable["type"] == "query" and variable.get("includeAll"), variable["name"]

    # Links to other dashboards name dashboards that are provisioned.
    for link in dashboard.get("links", []):
        if link["url"].startswith("/d/"):
            assert link["url"].removeprefix("/d/").split("/")[0] in uids, f"{path.name}: {link}"


@pytest.mark.parametrize("path", dashboard_params())
def test_every_dashboard_query_parses_as_promql(path: Path) -> None:
    dashboard = load(path)
    defined = {variable["name"] for variable in variables(dashboard)}
    found = queries(dashboard)
    assert len(found) > len(panels(dashboard))
    for query in found:
        expression = parse(query, defined)
        if query.selector_only:
            assert isinstance(expression, promql_parser.VectorSelector), query.where
    # Every variable is used: by a panel or by another variable.
    used = {name for query in found if not query.selector_only for name in _names(query.text)}
    used |= {name for query in found if query.selector_only for name in _names(query.text)}
    assert defined <= used, f"{path.name}: unused variables {defined - used}"


def _names(text: str) -> set[str]:
    return {next(group for group in match.groups() if group) for match in VARIABLE.finditer(text)}


def test_a_query_outside_the_real_promql_grammar_is_refused() -> None:
    """The checks above lean on the parser: it must reject what Prometheus rejects."""
    for bad in (
        "sum by (le) (rate(traces_span_metrics_calls_total[5m])",  # unbalanced
        "rate(traces_span_metrics_calls_total)",  # rate needs a range vector
        "histogram_quantil(0.9, x)",  # unknown function
    ):
        with pytest.raises(AssertionError):
            parse(Query("bad", bad), set())
    with pytest.raises(AssertionError, match="outside a regex matcher"):
        Query("bad", 'x{service_name="$service"}').promql({"service"})


# --------------------------------------------------------------------------------------------- live


class Series:
    """Samples by name, each a dict of labels, from Prometheus text scrapes."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[dict[str, str]]] = {}

    def add_scrape(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.by_name.setdefault(sample.name, []).append(dict(sample.labels))

    def matching(self, selector: Any) -> list[dict[str, str]]:
        name = selector.name
        matchers = list(selector.matchers.matchers)
        assert not selector.matchers.or_matchers, "or-matchers are not used here"
        if name is None:
            names = [
                m.value for m in matchers if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
            ]
            assert len(names) == 1, f"selector without a metric name: {selector}"
            name = names[0]
        matchers = [m for m in matchers if m.name != "__name__"]
        return [labels for labels in self.by_name.get(name, []) if all(_match(m, labels) for m in matchers)]


def _match(matcher: Any, labels: dict[str, str]) -> bool:
    """Prometheus semantics: a missing label is the empty string; regexes are anchored."""
    value = labels.get(matcher.name, "")
    if matcher.name in TARGET_LABELS and matcher.name not in labels:
        return True  # set by the scrape, not in the exposition
    op = matcher.op
    if op == promql_parser.MatchOp.Equal:
        return value == matcher.value
    if op == promql_parser.MatchOp.NotEqual:
        return value != matcher.value
    matched = re.fullmatch(matcher.value, value) is not None
    return matched if op == promql_parser.MatchOp.Re else not matched


def _selectors(expression: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expression, visit)
    return found


def _aggregations(expression: Any) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.AggregateExpr):
            found.append(node)

    promql_parser.walk(expression, visit)
    return found


@dataclass
class Observed:
    """What the real stack exported and delivered after real traffic."""

    stack: RunningStack
    series: Series
    slack: list[dict[str, Any]]
    alerts: list[dict[str, Any]]  # in the Alertmanager that rendered the messages
    services: dict[str, str] = field(default_factory=dict)


def _test_alertmanager_config(slack_url: str) -> dict[str, Any]:
    """collector/alertmanager.yml with its commented Slack receiver uncommented, posting to `slack_url`."""
    text = ALERTMANAGER_CONFIG.read_text()
    config = yaml.safe_load(text)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# slack_configs:")
    prefix = lines[start][: lines[start].index("#") + 2]
    block = []
    for line in lines[start:]:
        if not line.startswith(prefix):
            break
        block.append(line.removeprefix(prefix))
    receiver = yaml.safe_load("\n".join(block))
    for slack in receiver["slack_configs"]:
        assert slack.pop("api_url_file"), "the example reads the webhook URL from a file"
        slack["api_url"] = slack_url
    (target,) = [r for r in config["receivers"] if r["name"] == config["route"]["receiver"]]
    target.update(receiver)
    # Alertmanager reads relative template paths beside its config: this copy lives elsewhere.
    config["templates"] = [str(COLLECTOR_DIR / path) for path in config["templates"]]
    return config


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    base = tmp_path_factory.mktemp("dashboards")
    failing = Recorder()  # the otel-perf webhook sinks (in-app, analyzer): refused, counted as failures
    failing.status = 500
    slack = Recorder()
    # The Alertmanager the messages are read from: collector/alertmanager.yml plus the example receiver.
    am_port = free_port()
    (base / "alertmanager.yml").write_text(yaml.safe_dump(_test_alertmanager_config(slack.url)))
    am_log = (base / "alertmanager.log").open("w")
    alertmanager = subprocess.Popen(
        [
            str(ensure_binary("alertmanager")),
            f"--config.file={base / 'alertmanager.yml'}",
            f"--storage.path={base / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        stdout=am_log,
        stderr=subprocess.STDOUT,
    )
    am_url = f"http://127.0.0.1:{am_port}"
    stack: RunningStack | None = None
    apps: list[RunningApp] = []
    try:

        def ready() -> bool:
            assert alertmanager.poll() is None, (base / "alertmanager.log").read_text()
            try:
                return httpx.get(f"{am_url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=20, what="the test Alertmanager")
        stack = start_stack(
            base / "stack",
            analyzer_env={"OTEL_PERF_ALERTS_WEBHOOK_URL": failing.url},
            collector_env={"OTEL_PERF_ALERTMANAGER_URL": am_url},
        )
        services = {"in_app": "shop-dash", "analyzer": "shop-dash-collector"}
        common = {"OTEL_PERF_ALERTS_WEBHOOK_URL": failing.url}
        # Analysed in the app (its own metrics, its webhook failing), and by the analyzer only.
        for key, mode in (("in_app", "both"), ("analyzer", "collector")):
            apps.append(
                start_app(
                    base / key,
                    env={"OTEL_SERVICE_NAME": services[key], "OTEL_PERF_MODE": mode, **common},
                    export=stack.app_export_env(),
                )
            )
        for app in apps:
            drive_shop(app, rounds=2)
        _send_failed_request(stack, "checkout-dash")

        ports = stack.ports
        targets = [
            f"http://127.0.0.1:{ports.prometheus}/metrics",
            f"http://127.0.0.1:{ports.collector_telemetry}/metrics",
            f"http://127.0.0.1:{ports.analyzer(0)[1]}/metrics",
            f"{am_url}/metrics",
        ]

        def everything_arrived() -> Series | None:
            series = Series()
            for url in targets:
                series.add_scrape(httpx.get(url, timeout=5).text)
            errors = [
                labels
                for labels in series.by_name.get("traces_span_metrics_calls_total", [])
                if labels.get("status_code") == "STATUS_CODE_ERROR" and labels.get("http_route")
            ]
            arrived = (
                errors
                and series.by_name.get("otel_perf_sink_failures_total")
                and series.by_name.get("otel_perf_analyzer_sink_failures_total")
                and any(
                    labels.get("db_system") for labels in series.by_name["traces_span_metrics_calls_total"]
                )
                and _orders_message(slack.requests, services["in_app"])
            )
            return series if arrived else None

        series = wait_until(everything_arrived, timeout=45, interval=1, what="metrics and the Slack message")
        alerts = httpx.get(f"{am_url}/api/v2/alerts", timeout=5).json()
        yield Observed(stack, series, list(slack.requests), alerts, services)
    finally:
        for app in apps:
            app.stop()
        if stack is not None:
            stack.stack.down()
        alertmanager.terminate()
        alertmanager.wait(timeout=10)
        am_log.close()
        failing.close()
        slack.close()


def _send_failed_request(stack: RunningStack, service: str) -> None:
    """A server span with status ERROR on a route, as an instrumented framework exports a 500."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{stack.ports.otlp_grpc}", insecure=True))
    )
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "POST /checkout",
        kind=SpanKind.SERVER,
        attributes={"http.route": "/checkout", "http.method": "POST", "http.status_code": 500},
    ) as span:
        span.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()


def _orders_message(requests: list[dict[str, Any]], service: str) -> dict[str, Any] | None:
    """The Slack attachment for the shop's N+1 on GET /orders."""
    for request in requests:
        for attachment in request["json"].get("attachments", []):
            if (
                f"Service: {service} " in attachment["text"]
                and "Endpoint: GET /orders " in attachment["text"]
            ):
                attachment_: dict[str, Any] = attachment
                return attachment_
    return None


@pytest.mark.e2e
@pytest.mark.parametrize("path", dashboard_params())
def test_every_dashboard_query_selects_series_the_real_stack_exports(path: Path, observed: Observed) -> None:
    dashboard = load(path)
    defined = {variable["name"] for variable in variables(dashboard)}
    for query in queries(dashboard):
        expression = parse(query, defined)
        for selector in _selectors(expression):
            matched = observed.series.matching(selector)
            assert matched, f"{query.where}: no series for {selector}"
            if query.label is not None:
                assert any(query.label in labels for labels in matched), f"{query.where}: no {query.label}"
        # Grouping labels exist on the series aggregated (or the panel's legend shows nothing).
        for aggregation in _aggregations(expression):
            modifier = aggregation.modifier
            if modifier is None or modifier.type != promql_parser.AggModifierType.By:
                continue
            labels_seen = {
                label
                for selector in _selectors(aggregation.expr)
                for labels in observed.series.matching(selector)
                for label in labels
            } | TARGET_LABELS
            missing = set(modifier.labels) - labels_seen
            assert not missing, f"{query.where}: no series carries {missing}"
    # Legends name labels the result keeps (every query here aggregates `by` its legend's labels).
    for panel in panels(dashboard):
        for target in panel["targets"]:
            legend = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
            expression = parse(Query(panel["title"], target["expr"]), defined)
            kept = {
                label
                for aggregation in _aggregations(expression)
                if aggregation.modifier is not None
                for label in aggregation.modifier.labels
            }
            assert set(legend) <= kept, f"{path.name}: {panel['title']}: legend {legend}, kept {kept}"


@pytest.mark.e2e
def test_an_otel_perf_alert_renders_as_a_human_message(observed: Observed) -> None:
    service = observed.services["in_app"]
    attachment = _orders_message(observed.slack, service)
    assert attachment is not None
    (alert,) = [
        alert
        for alert in observed.alerts
        if alert["annotations"].get("service") == service
        and alert["annotations"]["operation"] == "GET /orders"
        and alert["annotations"]["perf.issue"] == "n_plus_one"
    ]
    annotations, labels = alert["annotations"], alert["labels"]
    jaeger = f"http://127.0.0.1:{observed.stack.ports.jaeger_query}"
    trace_link = f"{jaeger}/trace/{annotations['TraceID']}"
    text = attachment["text"]

    assert attachment["title"] == f"[FIRING:1] otel-perf {labels['severity']}: {annotations['title']}"
    assert attachment["title_link"] == trace_link
    assert attachment["color"] == {"low": "#439FE0", "medium": "warning"}.get(labels["severity"], "danger")
    assert text.startswith(f"*{labels['severity'].upper()}* {annotations['title']}\n")
    assert f"Service: {service} · Endpoint: GET /orders · Issue: n_plus_one · Seen " in text
    # The fix, where in the code, the query, and the trace.
    assert "selectinload(Order.customer)" in annotations["details.suggestion"]
    assert f"Fix: {annotations['details.suggestion']}\n" in text
    code = (
        f"Code: {annotations['details.code_location.file']}:{annotations['details.code_location.line']}"
        f" in {annotations['details.code_location.function']}()\n"
    )
    assert code in text and annotations["details.code_location.file"].endswith("main.py")
    assert f"Query: `{annotations['details.statement']}`\n" in text
    assert text.endswith(f"Trace: {trace_link}\n")
    # The link opens the offending trace in Jaeger.
    trace = observed.stack.jaeger_trace(annotations["TraceID"])
    assert trace is not None
    assert "GET /orders" in {span["operationName"] for span in trace["spans"]}


@pytest.mark.e2e
def test_the_rigs_alertmanager_runs_collector_alertmanager_yml_with_its_templates(observed: Observed) -> None:
    """`otel-perf rig` (and so compose and Kubernetes, which mount the same files) starts Alertmanager
    on collector/alertmanager.yml: it loads, and names the template file beside it."""
    port = observed.stack.ports.alertmanager
    status = httpx.get(f"http://127.0.0.1:{port}/api/v2/status", timeout=5).json()
    loaded = yaml.safe_load(status["config"]["original"])
    templates = [Path(path) for path in loaded["templates"]]
    assert templates == [COLLECTOR_DIR / "alertmanager.tmpl"]
    assert all(path.is_file() for path in templates)
    assert os.path.samefile(templates[0], COLLECTOR_DIR / "alertmanager.tmpl")
    assert loaded["receivers"] == yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["receivers"]
