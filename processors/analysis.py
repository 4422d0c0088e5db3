"""Run the detectors over one tree: the step both hosts (span processor, analyzer) share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol, TypeVar

from otel_perf.processors import semconv
from otel_perf.processors.config import ScopedSection, Section
from otel_perf.processors.detectors import REGISTRY
from otel_perf.processors.detectors.base import Detector
from otel_perf.processors.engine import EngineStats
from otel_perf.processors.findings import Finding
from otel_perf.processors.sources import Mark
from otel_perf.processors.tree import FirstRequests, SpanNode, TraceShape, TraceTree

logger = logging.getLogger("otel_perf.analysis")

S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


class SpanAdapter(Protocol[S_contra]):
    """What the analyse step needs of one kind of span (`processors.sources`: SDK, OTLP)."""

    def shape(self, spans: Sequence[S_contra]) -> TraceShape:
        """The trace's shape, read from the spans without building nodes (the pre-check)."""
        ...

    def nodes(self, spans: Sequence[S_contra]) -> list[SpanNode]:
        """The tree's nodes, one per span, each with its span as `source` (for `annotate`). All at
        once rather than one call per span: this runs for every span analysed."""
        ...

    def annotate(self, node: SpanNode, mark: Mark) -> None:
        """Write `perf.issue`, `perf.issue.fingerprint` and `perf.issues` on the node's span."""
        ...


def build_detectors(sections: Mapping[str, Section] | None = None) -> list[Detector]:
    """One detector per enabled registry entry, each with its own settings section: from
    `sections` (by registry name) where given, else read from the environment."""
    detectors: list[Detector] = []
    for name, (detector_class, section_class) in REGISTRY.items():
        section = (sections or {}).get(name) or section_class.load()
        if _enabled_anywhere(section):
            detectors.append(detector_class(section))
    return detectors


def _enabled_anywhere(section: Section) -> bool:
    """Whether a detector runs at all: enabled, or enabled for some service or operation only."""
    if getattr(section, "enabled", True):
        return True
    scopes = section.scopes if isinstance(section, ScopedSection) else {}
    return any(values.get("enabled") for values in scopes.values())


def _disabled_at(detector: Detector, finding: Finding) -> bool:
    """Whether the detector is turned off for the finding's service or operation (`scopes`)."""
    settings = getattr(detector, "settings", None)
    if not isinstance(settings, ScopedSection) or not settings.scopes:
        return False
    return not getattr(settings.at(finding.service, finding.operation), "enabled", True)


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
                if _disabled_at(detector, finding):
                    continue
                if not _has_genuine_entry(tree, finding):
                    logger.debug("otel-perf: %s dropped: no real entry span in this trace", finding.title)
                    continue
                finding.source = source
                finding.root_span_id = root.span_id if root is not None else None
                findings.append(finding)
        except Exception:  # a bug in one detector must not stop analysis
            logger.exception("otel-perf: detector %s failed on trace %s", detector.name, tree.trace_id_hex)
    return _without_superseded(
        findings, {detector.name: getattr(detector, "supersedes", ()) for detector in detectors}
    )


def _without_superseded(findings: list[Finding], supersedes: Mapping[str, Collection[str]]) -> list[Finding]:
    """Drop each finding that is part of a wider one (see `Detector.supersedes`): most of its spans
    are among the spans of a finding whose detector supersedes its type."""
    wider = [
        (supersedes[finding.type], set(finding.offending))
        for finding in findings
        if supersedes.get(finding.type) and finding.offending
    ]
    if not wider:
        return findings
    return [
        finding
        for finding in findings
        if not any(
            finding.type in types and 2 * len(spans.intersection(finding.offending)) > len(finding.offending)
            for types, spans in wider
        )
    ]


def _has_genuine_entry(tree: TraceTree, finding: Finding) -> bool:
    """Every alert names a real entry point of its trace: findings under a missing parent (a
    trace fragment) are dropped rather than filed under an operation that does not exist."""
    if not finding.offending:
        return True
    node = tree.nodes.get(finding.offending[0])
    return node is None or tree.is_genuine_entry(tree.entry_span(node))


def _is_alert_trace(tree: TraceTree) -> bool:
    return all(node.name == semconv.ALERT_SPAN_NAME for node in tree.nodes.values())


def analyse_trace(
    trace_id: int,
    spans: Sequence[S],
    adapter: SpanAdapter[S],
    detectors: Sequence[Detector],
    stats: EngineStats,
    *,
    source: str = "in_process",
    annotate: bool = True,
    keep: Callable[[TraceTree, Finding], bool] | None = None,
    first_requests: FirstRequests | None = None,
) -> list[Finding]:
    """The analyse step of both hosts: shape pre-check, tree, findings, flagged spans annotated
    (unless `annotate` is false), counted in `stats`. `keep`: which findings to return (after
    annotation). `first_requests`: what tells start-up from background work. Never raises: a
    failed analysis is counted and logged; the spans go on as they are.
    """
    findings: list[Finding] = []
    try:
        if worth_analysing(adapter.shape(spans), detectors):
            tree = TraceTree(trace_id, adapter.nodes(spans), first_requests)
            findings = analyze_tree(tree, detectors, source=source)
            if findings and annotate:
                nodes = tree.nodes
                for span_id, mark in span_marks(findings).items():
                    node = nodes.get(span_id)
                    if node is not None and node.source is not None:
                        adapter.annotate(node, mark)
            if findings and keep is not None:
                findings = [finding for finding in findings if keep(tree, finding)]
        stats.traces_analysed += 1
        stats.spans_analysed += len(spans)
        stats.findings += len(findings)
    except Exception:
        stats.analysis_errors += 1
        logger.exception("otel-perf: analysis of trace %032x failed; passing it on unannotated", trace_id)
    return findings


def span_marks(findings: Sequence[Finding]) -> dict[int, Mark]:
    """span id → (issue type, fingerprint, all issue types) for every flagged span.

    Where a span is flagged twice (a slow query inside an N+1), `perf.issue` names the more
    severe finding; `perf.issues` lists all of them.
    """
    marks: dict[int, Mark] = {}
    for finding in sorted(findings, key=lambda each: -each.severity):
        for span_id in finding.offending:
            current = marks.get(span_id)
            if current is None:
                marks[span_id] = (finding.type, finding.fingerprint, [finding.type])
            elif finding.type not in current[2]:
                current[2].append(finding.type)
    return marks
