"""Alerts as a rich table, for `otel-perf demo` and the summary of `otel-perf analyze`.

Alert text (titles quoting SQL such as `[dbo].[orders]`, paths, URLs) goes into rich markup only
through `rich.markup.escape`: shown as written, never interpreted, never a `MarkupError`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

SEVERITY_STYLES = {"low": "cyan", "medium": "yellow", "high": "red", "critical": "bold white on red"}
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def _evidence(alert: Mapping[str, Any]) -> str:
    details = alert.get("details", {})
    if alert.get("type") == "n_plus_one":
        return f"{details.get('count')} repeats, {details.get('total_duration_ms')} ms in all"
    if alert.get("type") == "slow_span":
        return f"{details.get('ratio')}× its threshold"
    return ", ".join(f"{key}={value}" for key, value in details.items() if isinstance(value, (int, float)))


def _where(alert: Mapping[str, Any]) -> str:
    """The code location and, where the alert has one (`OTEL_PERF_TRACE_URL`), the trace's link.
    Every piece is text from the app (paths, function names, URLs): escaped, never markup."""
    lines = []
    location = alert.get("details", {}).get("code_location")
    if location:
        where = f"{os.path.basename(str(location.get('file')))}:{location.get('line')}"
        lines += [escape(where), f"[dim]{escape(str(location.get('function')))}[/]"]
    link = alert.get("trace_url")
    if link:
        lines.append(f"[dim]trace: {escape(str(link))}[/]")
    return "\n".join(lines)


def _finding(alert: Mapping[str, Any]) -> str:
    title = str(alert.get("title", ""))
    operation = str(alert.get("operation", ""))
    title = title.replace(f" in {operation}", "", 1)
    # Titles quote SQL (`[dbo].[orders]`) and paths: text, never markup.
    lines = [f"[bold]{escape(title)}[/]", escape(_evidence(alert))]
    suggestion = alert.get("details", {}).get("suggestion")
    if suggestion:
        lines.append(f"[dim]fix: {escape(str(suggestion))}[/]")
    return "\n".join(line for line in lines if line)


def alerts_table(alerts: Iterable[Mapping[str, Any]], title: str = "Findings") -> Table:
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Endpoint", ratio=2)
    table.add_column("Finding", ratio=6)
    table.add_column("Where", ratio=2)
    ordered = sorted(
        alerts,
        key=lambda alert: (SEVERITY_ORDER.get(alert.get("severity", "low"), 9), alert.get("operation", "")),
    )
    for alert in ordered:
        severity = str(alert.get("severity", ""))
        table.add_row(
            Text(severity.upper(), style=SEVERITY_STYLES.get(severity, "")),
            f"{escape(str(alert.get('operation')))}\n[dim]{escape(str(alert.get('service')))}[/]",
            _finding(alert),
            _where(alert),
        )
    return table


def _finding_key(alert: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes two alerts one finding: the fingerprint; without one, type, endpoint and statement."""
    fingerprint = alert.get("fingerprint")
    if fingerprint:
        return ("fingerprint", str(fingerprint))
    details = alert.get("details", {})
    statement = details.get("statement") or details.get("normalized") or alert.get("title", "")
    return (str(alert.get("type")), str(alert.get("operation")), str(statement))


def group_findings(alerts: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], int]]:
    """One entry per finding, worst first: its most severe (then latest) sighting and how often it
    was seen. A finding is alerted again when it gets worse or after the cooldown, and each alert's
    `occurrences` counts the repeats held back before it: a reader wants one line, not one per alert."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for alert in alerts:
        groups.setdefault(_finding_key(alert), []).append(alert)
    found = []
    for sightings in groups.values():
        worst = min(
            reversed(sightings), key=lambda alert: SEVERITY_ORDER.get(str(alert.get("severity", "low")), 9)
        )
        count = 0
        for alert in sightings:
            occurrences = alert.get("occurrences")
            count += occurrences if isinstance(occurrences, int) and occurrences > 0 else 1
        found.append((worst, count))
    found.sort(
        key=lambda each: (
            SEVERITY_ORDER.get(str(each[0].get("severity", "low")), 9),
            str(each[0].get("operation", "")),
        )
    )
    return found


def findings_table(alerts: Iterable[Mapping[str, Any]], title: str = "Findings") -> Table:
    """The demo's table: one row per finding (see `group_findings`) with its count of sightings.
    Long text folds inside its cell, never cut with an ellipsis: the fix must be readable in full
    on an 80-column terminal."""
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Endpoint", ratio=2, overflow="fold")
    table.add_column("Finding", ratio=6, overflow="fold")
    table.add_column("Where", ratio=2, overflow="fold")
    for alert, count in group_findings(alerts):
        severity = str(alert.get("severity", ""))
        table.add_row(
            Text.assemble((severity.upper(), SEVERITY_STYLES.get(severity, "")), f"\n×{count}"),
            escape(str(alert.get("operation"))),
            _finding(alert),
            _where(alert),
        )
    return table
