"""What the router hands the sinks, and the shape of a sink: the leaf both alerting modules import."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from otel_perf.processors.findings import Finding, Severity


@dataclass
class Alert:
    """A finding the router decided to send, with how often it occurred since the last one."""

    finding: Finding
    occurrences: int = 1
    # The same for every delivery of one alert (fingerprint and cooldown window): receivers that may
    # see a retry twice (a timeout after the POST arrived) can drop the second (`Idempotency-Key`).
    key: str = ""

    def to_json(self, trace_url: str | None = None) -> dict[str, Any]:
        """The alert contract's JSON; with `trace_url` (a template with `{trace_id}`), a `trace_url`
        field too, where the alert has a trace (the contract is extended, never renamed)."""
        data = self.finding.to_json()
        data["occurrences"] = self.occurrences
        link = self.trace_link(trace_url)
        if link:
            data["trace_url"] = link
        return data

    def trace_link(self, trace_url: str | None) -> str:
        """The template with this alert's trace id in it; "" without a template or a trace."""
        if not trace_url or not self.finding.trace_id:
            return ""
        return trace_url.replace("{trace_id}", self.finding.trace_id)

    def to_record(self) -> dict[str, Any]:
        """Everything a sink reads, as JSON (the outbox keeps alerts across restarts)."""
        record = asdict(self.finding)
        record["severity"] = self.finding.severity.label
        record["occurrences"] = self.occurrences
        record["key"] = self.key
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Alert:
        fields = {key: value for key, value in record.items() if key in _FINDING_FIELDS}
        fields["severity"] = Severity.parse(fields["severity"])
        return cls(Finding(**fields), int(record.get("occurrences", 1)), str(record.get("key", "")))


_FINDING_FIELDS = frozenset(field.name for field in dataclasses.fields(Finding))


class Sink(Protocol):
    """Delivers alerts somewhere (file, webhook, OTLP, console). May raise: the router contains it.
    Optionally, `destination`: what identifies where it delivers (`file:/var/log/alerts.jsonl`), so
    that a process only ever delivers, from a shared outbox, what was meant for the same place
    (the router falls back to `name`)."""

    name: str

    def send(self, alert: Alert) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
