"""What the router hands the sinks, and the shape of a sink: the leaf both alerting modules import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from otel_perf.processors.findings import Finding


@dataclass
class Alert:
    """A finding the router decided to send, with how often it occurred since the last one."""

    finding: Finding
    occurrences: int = 1

    def to_json(self) -> dict[str, Any]:
        data = self.finding.to_json()
        data["occurrences"] = self.occurrences
        return data


class Sink(Protocol):
    """Delivers alerts somewhere (file, webhook, OTLP, console). May raise: the router contains it."""

    name: str

    def send(self, alert: Alert) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...
