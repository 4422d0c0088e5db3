"""Trace analysis: the trace-tree model, the detectors and the span processor that hosts them.

Public API: `TraceAnalysisSpanProcessor` (an SDK `SpanProcessor`, constructible with no
arguments), `TraceTree`/`SpanNode`, `Finding`/`Severity`.
"""

from otel_perf.processors.findings import Finding, Severity
from otel_perf.processors.processor import ProcessorSettings, TraceAnalysisSpanProcessor
from otel_perf.processors.tree import SpanNode, TraceTree

__all__ = ["Finding", "ProcessorSettings", "Severity", "SpanNode", "TraceAnalysisSpanProcessor", "TraceTree"]
