"""The shape every detector has: settings in, findings out, one trace tree at a time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from otel_perf.processors.findings import Finding
from otel_perf.processors.tree import SpanNode, TraceShape, TraceTree


class Detector(Protocol):
    """Reads a whole tree and yields findings. Pure: no I/O, no clock (time comes from spans).
    Built from its own settings section (see the registry)."""

    name: ClassVar[str]
    # Optional, `supersedes: ClassVar[frozenset[str]]`: finding types this detector's findings
    # include. A finding of one of these types whose spans are mostly among one of ours is the same
    # problem seen in part, and is dropped (an MN+1 loop is not also reported as three N+1s).

    def __init__(self, settings: Any = None) -> None: ...

    def could_match(self, shape: TraceShape) -> bool:
        """False only when this trace certainly holds nothing for this detector (cheap, no nodes)."""
        ...

    def detect(self, tree: TraceTree) -> Iterable[Finding]: ...


def operation_of(tree: TraceTree, node: SpanNode) -> str:
    """The endpoint, job or `startup` a finding is filed under (see `TraceTree.operation`)."""
    return tree.operation(node)


def common_location(members: list[SpanNode]) -> dict[str, object] | None:
    locations = Counter(
        (m.code_file, m.code_line, m.code_function) for m in members if m.code_location is not None
    )
    if not locations:
        return None
    (file, line, function), _ = locations.most_common(1)[0]
    return {"file": file, "line": line, "function": function}


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
