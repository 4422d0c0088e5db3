"""The shape every detector has: settings in, findings out, one trace tree at a time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from otel_perf.processors.findings import Finding
from otel_perf.processors.tree import SpanNode, TraceShape, TraceTree


class Detector(Protocol):
    """Reads a whole tree and yields findings. Pure: no I/O, no clock (time comes from spans).
    Built from its own settings section (see the registry)."""

    name: ClassVar[str]

    def __init__(self, settings: Any = None) -> None: ...

    def could_match(self, shape: TraceShape) -> bool:
        """False only when this trace certainly holds nothing for this detector (cheap, no nodes)."""
        ...

    def detect(self, tree: TraceTree) -> Iterable[Finding]: ...


def operation_of(tree: TraceTree, node: SpanNode) -> str:
    """The endpoint or root span name a finding is filed under (e.g. `GET /orders/{id}`)."""
    return tree.entry_span(node).name


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
