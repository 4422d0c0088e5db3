"""Run the detectors over one tree: the step both hosts (span processor, analyzer) share."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from otel_perf.processors import semconv
from otel_perf.processors.config import Section
from otel_perf.processors.detectors import REGISTRY
from otel_perf.processors.detectors.base import Detector
from otel_perf.processors.findings import Finding
from otel_perf.processors.tree import TraceShape, TraceTree

logger = logging.getLogger("otel_perf.analysis")


def build_detectors(sections: Mapping[str, Section] | None = None) -> list[Detector]:
    """One detector per enabled registry entry, each with its own settings section: from
    `sections` (by registry name) where given, else read from the environment."""
    detectors: list[Detector] = []
    for name, (detector_class, section_class) in REGISTRY.items():
        section = (sections or {}).get(name) or section_class.load()
        if getattr(section, "enabled", True):
            detectors.append(detector_class(section))
    return detectors


def worth_analysing(shape: TraceShape, detectors: Sequence[Detector]) -> bool:
    """Whether any detector could find something in a trace of this shape (a detector without
    `could_match` always runs)."""
    for detector in detectors:
        could_match = getattr(detector, "could_match", None)
        if could_match is None or could_match(shape):
            return True
    return False


def analyze_tree(tree: TraceTree, detectors: Sequence[Detector], source: str = "in_process") -> list[Finding]:
    """Every finding of every detector. A detector that raises loses its own findings for this
    tree, never the others' and never the host's."""
    if not tree.nodes or _is_alert_trace(tree):
        return []
    findings: list[Finding] = []
    root = tree.root
    for detector in detectors:
        try:
            for finding in detector.detect(tree):
                if not _has_genuine_entry(tree, finding):
                    logger.debug("otel-perf: %s dropped: no real entry span in this trace", finding.title)
                    continue
                finding.source = source
                finding.root_span_id = root.span_id if root is not None else None
                findings.append(finding)
        except Exception:  # a bug in one detector must not stop analysis
            logger.exception("otel-perf: detector %s failed on trace %s", detector.name, tree.trace_id_hex)
    return findings


def _has_genuine_entry(tree: TraceTree, finding: Finding) -> bool:
    """Every alert names a real entry point of its trace: findings under a missing parent (a
    trace fragment) are dropped rather than filed under an operation that does not exist."""
    if not finding.offending:
        return True
    node = tree.nodes.get(finding.offending[0])
    return node is None or tree.is_genuine_entry(tree.entry_span(node))


def _is_alert_trace(tree: TraceTree) -> bool:
    return all(node.name == semconv.ALERT_SPAN_NAME for node in tree.nodes.values())


def span_marks(findings: Sequence[Finding]) -> dict[int, tuple[str, str, list[str]]]:
    """span id → (issue type, fingerprint, all issue types) for every flagged span.

    Where a span is flagged twice (a slow query inside an N+1), `perf.issue` names the more
    severe finding; `perf.issues` lists all of them.
    """
    marks: dict[int, tuple[str, str, list[str]]] = {}
    for finding in sorted(findings, key=lambda each: -each.severity):
        for span_id in finding.offending:
            current = marks.get(span_id)
            if current is None:
                marks[span_id] = (finding.type, finding.fingerprint, [finding.type])
            elif finding.type not in current[2]:
                current[2].append(finding.type)
    return marks
