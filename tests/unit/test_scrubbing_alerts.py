"""The scrubbing corpus end to end: statements and URLs with secrets go through the detectors, the
router's alert, every sink's rendering (JSON, Slack text, OTLP attributes) and the span annotations:
no secret reaches anything that leaves the process."""

from __future__ import annotations

import json
import random

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.sinks import alert_attributes, slack_text
from otel_perf.processors.analysis import analyze_tree, build_detectors, span_marks
from otel_perf.processors.tree import KIND_CLIENT, TraceTree
from tests.support.secrets_corpus import CORPUS, leaked, random_token
from tests.unit.builders import node, server

DETECTORS = build_detectors()
REPEATS = 6  # an N+1 (≥ 5) of slow queries (each over the 100 ms threshold): both detectors report


# Ids and hashes (hex) are not literals; left out so that their digits are not mistaken for a number's.
_IDS = {"trace_id", "span_ids", "fingerprint", "perf.issue.fingerprint"}


def _without_ids(data: dict) -> str:
    return json.dumps({key: value for key, value in data.items() if key not in _IDS}, default=str)


def _outgoing(findings: list) -> str:
    """Everything of these findings that leaves the process, as text."""
    parts = []
    for finding in findings:
        alert = Alert(finding)
        parts += [_without_ids(alert.to_json()), slack_text(alert), finding.alert_name.rsplit(" #", 1)[0]]
        parts.append(_without_ids(alert_attributes(alert)))
    parts += [issue for issue, _, _ in span_marks(findings).values()]
    return "\n".join(parts)


def test_no_secret_of_the_corpus_leaves_in_an_alert() -> None:
    failures = []
    for case in CORPUS[::8]:
        root = server("GET /checkout/{id}", 0, REPEATS * 200 + 10)
        spans = [
            node(
                case.statement.split(" ", 1)[0][:20],
                index * 200 + 1,
                index * 200 + 180,
                parent=root,
                kind=KIND_CLIENT,
                attributes={"db.system": case.dialect, "db.statement": case.statement},
            )
            for index in range(REPEATS)
        ]
        findings = analyze_tree(TraceTree(0xABC, [root, *spans]), DETECTORS)
        assert {finding.type for finding in findings} == {"n_plus_one", "slow_span"}, case.statement
        text = _outgoing(findings)
        leaks = [leak for secret in case.secrets if (leak := leaked(secret, text, case.skeleton))]
        if leaks:
            failures.append((case.dialect, case.statement, leaks))
    assert not failures, f"{len(failures)} leaked, e.g. {failures[:3]}"


def test_no_url_token_leaves_in_an_alert() -> None:
    rng = random.Random(7)
    for _ in range(200):
        token, value = random_token(rng), random_token(rng)
        url = f"https://user:{value}@api.example.com/reset/{token}/confirm?key={value}#{value}"
        root = server("POST /password-reset", 0, REPEATS * 1200 + 10)
        calls = [
            node(
                "GET",
                index * 1200 + 1,
                index * 1200 + 1100,
                parent=root,
                kind=KIND_CLIENT,
                attributes={"http.request.method": "GET", "url.full": url},
            )
            for index in range(REPEATS)
        ]
        findings = analyze_tree(TraceTree(0xABC, [root, *calls]), DETECTORS)
        assert {finding.type for finding in findings} == {"n_plus_one", "slow_span"}
        text = _outgoing(findings)
        for secret in (token, value):
            assert leaked(secret, text, url.replace(token, " ").replace(value, " ")) is None, text
