"""The pipeline for end-to-end tests: the `otel-perf rig` stack (real collector, analyzer, Jaeger,
Alertmanager) on free ports, and what tests ask of it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from otel_perf.stack.rig import Stack, StackPorts

# Short waits so a test doesn't sit through production-sized buffering.
FAST_COLLECTOR = {
    "OTEL_PERF_GROUPBYTRACE_WAIT": "1s",
    "OTEL_PERF_TAIL_SAMPLING_WAIT": "1s",
    "OTEL_PERF_SPANMETRICS_FLUSH_INTERVAL": "1s",
}


@dataclass
class RunningStack:
    stack: Stack

    @property
    def ports(self) -> StackPorts:
        return self.stack.ports

    def app_export_env(self) -> dict[str, str]:
        """What an app needs to send everything to this stack's collector, promptly."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.ports.otlp_grpc}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "2000",
        }

    # --- Jaeger -----------------------------------------------------------------------------------

    def jaeger_traces(
        self, service: str, tags: dict[str, str] | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"service": service, "limit": limit, "lookback": "1h"}
        if tags:
            params["tags"] = json.dumps(tags)
        response = httpx.get(
            f"http://127.0.0.1:{self.ports.jaeger_query}/api/traces", params=params, timeout=10
        )
        if response.status_code == 404:
            return []  # service not known yet
        response.raise_for_status()
        return response.json()["data"] or []

    def jaeger_trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace by id, whatever its timestamps (search only covers a lookback window)."""
        response = httpx.get(f"http://127.0.0.1:{self.ports.jaeger_query}/api/traces/{trace_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json()["data"]
        return data[0] if data else None

    # --- Alertmanager -----------------------------------------------------------------------------

    def alertmanager_alerts(self, service: str | None = None) -> list[dict[str, Any]]:
        response = httpx.get(f"http://127.0.0.1:{self.ports.alertmanager}/api/v2/alerts", timeout=10)
        response.raise_for_status()
        alerts = response.json()
        return [
            alert for alert in alerts if service is None or alert["annotations"].get("service") == service
        ]

    # --- the collector's file exporter and the analyzers ---------------------------------------------

    def alert_records(self, service: str) -> list[dict[str, Any]]:
        """Alert log records the collector's file exporter wrote, for one service."""
        path = self.stack.state_dir / "alert-records.jsonl"
        records = []
        if not path.exists():
            return records
        for line in path.read_text().splitlines():
            document = json.loads(line)
            for resource_logs in document.get("resourceLogs", []):
                for scope_logs in resource_logs.get("scopeLogs", []):
                    for record in scope_logs.get("logRecords", []):
                        attributes = {
                            kv["key"]: next(iter(kv["value"].values()), None)
                            for kv in record.get("attributes", [])
                        }
                        if attributes.get("service") == service:
                            records.append({"body": record.get("body", {}).get("stringValue"), **attributes})
        return records

    def analyzer_alerts(self) -> list[dict[str, Any]]:
        alerts = []
        for path in sorted(self.stack.state_dir.glob("analyzer-*-alerts.jsonl")):
            alerts += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return alerts

    def analyzer_metric(self, index: int, name: str) -> float:
        _, http_port = self.ports.analyzer(index)
        text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(name)}(?:_total)? ([0-9.e+]+)$", text, re.M)
        assert match, f"{name} not in analyzer {index} metrics"
        return float(match.group(1))


def start_stack(
    state_dir: Path,
    analyzers: int = 1,
    analyzer_env: dict[str, str] | None = None,
    collector_env: dict[str, str] | None = None,
) -> RunningStack:
    stack = Stack(
        state_dir,
        StackPorts.free(),
        analyzers,
        analyzer_env=analyzer_env or {},
        collector_env={**FAST_COLLECTOR, **(collector_env or {})},
    )
    stack.build()  # cached binaries; a failed build raises here: end-to-end tests never skip
    stack.up()
    return RunningStack(stack)


def span_tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}
