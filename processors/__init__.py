"""Trace analysis: the trace-tree model, the detectors and the span processor that hosts them.

Public API: `TraceAnalysisSpanProcessor` (an SDK `SpanProcessor`, constructible with no
arguments), `TraceTree`/`SpanNode`, `Finding`/`Severity`. Resolved on first use, so importing the
tree model or the normaliser (as the offline tools do) loads neither the SDK nor pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_perf.processors.findings import Finding, Severity
    from otel_perf.processors.processor import ProcessorSettings, TraceAnalysisSpanProcessor
    from otel_perf.processors.tree import SpanNode, TraceTree

_HOME = {
    "Finding": "findings",
    "Severity": "findings",
    "ProcessorSettings": "processor",
    "TraceAnalysisSpanProcessor": "processor",
    "SpanNode": "tree",
    "TraceTree": "tree",
}
__all__ = ["Finding", "ProcessorSettings", "Severity", "SpanNode", "TraceAnalysisSpanProcessor", "TraceTree"]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
