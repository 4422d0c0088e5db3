"""The pytest plugin: a test whose requests run N+1 queries (or more queries than its budget) fails,
with the finding, the application line that issued the queries and the fix, before production.

Off unless asked (`pytest --otel-perf`, or `otel_perf = true` in the ini file). Off, it only
registers its options and its marker: nothing of OpenTelemetry is imported or instrumented. On, it is
a composition root like the bootstrap: before the conftest files are imported (so an app module's
engine and `FastAPI()`, created at import, are traced) it builds otel-perf's analysis processor
behind a `TracerProvider` that exports nothing, instruments SQLAlchemy and FastAPI, and hands the
findings to itself instead of the alert sinks. Each test function's requests are analysed when it
returns (the processor is flushed), and judged then: the findings and query counts that arrived
while it ran are its own, since tests run one at a time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import threading
from collections import Counter
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]  # untyped
        BaseInstrumentor,
    )
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

    from otel_perf.processors.findings import Finding
    from otel_perf.processors.processor import TraceAnalysisSpanProcessor

logger = logging.getLogger("otel_perf.pytest")

MARKER = "otel_perf"
# What fails a test unless `--otel-perf-fail-on` names a severity: an N+1 of any severity (on a fast
# local database in tests, the impact rule rates them low).
FAIL_ON_N_PLUS_ONE = "n_plus_one"
N_PLUS_ONE_TYPES = frozenset(("n_plus_one", "mn_plus_one"))
FAIL_ON_CHOICES = (FAIL_ON_N_PLUS_ONE, "low", "medium", "high", "critical")
_MARKER_ARGUMENTS = frozenset(("max_queries", "allow"))
_FLUSH_TIMEOUT_MS = 30_000
_MAX_STATEMENT_CHARS = 120
_MIN_WIDTH = 100
_INSTRUMENTED = {"sqlalchemy": "SQLAlchemy", "fastapi": "FastAPI"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("otel-perf", "otel-perf: N+1 queries and query budgets")
    group.addoption(
        "--otel-perf",
        action="store_true",
        dest="otel_perf",
        default=False,
        help="fail tests whose requests run N+1 queries (instruments SQLAlchemy and FastAPI, exports "
        "nothing)",
    )
    group.addoption(
        "--otel-perf-fail-on",
        dest="otel_perf_fail_on",
        choices=FAIL_ON_CHOICES,
        default=None,
        help="what fails a test: n_plus_one (any N+1 or M+N pattern, the default), or any finding "
        "at or above a severity (low, medium, high, critical)",
    )
    parser.addini("otel_perf", type="bool", default=False, help="as --otel-perf")
    parser.addini("otel_perf_fail_on", default=FAIL_ON_N_PLUS_ONE, help="as --otel-perf-fail-on")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Start before the conftest files are imported: an app they import creates its engine and its
    `FastAPI()` then, which must already be the instrumented ones."""
    if early_config.stash.get(_SESSION, None) is None and _wanted(early_config, early=True):
        early_config.stash[_SESSION] = _start(early_config, early=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(max_queries=None, allow=()): with --otel-perf, fail the test when one of its "
        "requests runs more than max_queries SQL queries; findings of the types in allow "
        "(e.g. 'n_plus_one') do not fail it.",
    )
    session = config.stash.get(_SESSION, None)
    if session is None and _wanted(config, early=False):
        # Registered too late for the early hook (from a conftest's `pytest_plugins`).
        session = config.stash[_SESSION] = _start(config, early=False)
    if session is not None:
        config.pluginmanager.register(session, "otel-perf-session")


def _option(config: pytest.Config, name: str, *, early: bool) -> Any:
    """A command-line option's value; early (before pytest_configure), from the arguments parsed so far."""
    if early:
        return getattr(config.known_args_namespace, name, None)
    return config.getoption(name, None)


def _wanted(config: pytest.Config, *, early: bool) -> bool:
    return bool(_option(config, "otel_perf", early=early)) or bool(config.getini("otel_perf"))


def _fail_on(config: pytest.Config, *, early: bool) -> str:
    chosen = _option(config, "otel_perf_fail_on", early=early) or config.getini("otel_perf_fail_on")
    value = str(chosen).strip().lower()
    if value not in FAIL_ON_CHOICES:
        raise pytest.UsageError(
            f"otel-perf: otel_perf_fail_on = {chosen!r}: use one of {', '.join(FAIL_ON_CHOICES)}"
        )
    return value


# --- what the plugin collects while a test runs ------------------------------------------------------


class _CollectedFindings:
    """The findings handler the processor hands findings to: kept for the test that runs now, every
    one (no deduplication or cooldown, which would hide the second test's N+1 on the same route),
    and sent nowhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._findings: list[Finding] = []

    def submit(self, findings: Sequence[Finding]) -> None:
        with self._lock:
            self._findings.extend(findings)

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        pass

    def take(self) -> list[Finding]:
        with self._lock:
            taken, self._findings = self._findings, []
        return taken


@dataclass
class RequestQueries:
    """One request's SQL queries (their templates, literals scrubbed), for the budget."""

    operation: str
    statements: list[str] = field(default_factory=list)


class _QueryCounter:
    """Beside the analysis (a span processor forwards ended spans here): each trace's SQL statements
    and the request (the entry span) they ran in. BEGIN/COMMIT and pool checkouts are not queries."""

    def __init__(self) -> None:
        from opentelemetry.trace import SpanKind

        from otel_perf.processors import normalize, semconv

        self._normalize = normalize
        self._semconv = semconv
        self._client = SpanKind.CLIENT
        self._entry_kinds = (SpanKind.SERVER, SpanKind.CONSUMER)
        self._lock = threading.Lock()
        self._statements: dict[int, list[str]] = {}
        self._requests: dict[int, str] = {}

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._count(span)
        except Exception:  # never into the application (or the test)
            logger.debug("otel-perf: could not count a span", exc_info=True)

    def _count(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        parent = span.parent
        if span.kind in self._entry_kinds and (parent is None or parent.is_remote):
            with self._lock:
                self._requests.setdefault(trace_id, span.name)
            return
        if span.kind is not self._client:
            return
        attributes = span.attributes or {}
        semconv = self._semconv
        system = semconv.first(attributes, semconv.DB_SYSTEM)
        statement = semconv.first(attributes, semconv.DB_STATEMENT)
        if not statement or system in semconv.CACHE_SYSTEMS:
            return
        template = self._normalize.normalize_sql(str(statement), str(system) if system else None)
        if self._normalize.is_transaction_control(template):
            return
        with self._lock:
            self._statements.setdefault(trace_id, []).append(template)

    def take(self) -> list[RequestQueries]:
        """The requests that ended since the last call, with their queries; traces without an entry
        span (the test's own setup queries) are dropped."""
        with self._lock:
            statements, self._statements = self._statements, {}
            requests, self._requests = self._requests, {}
        return [
            RequestQueries(operation, statements.get(trace_id, []))
            for trace_id, operation in requests.items()
        ]


# --- the session: built once, judges each test --------------------------------------------------------


@dataclass(frozen=True)
class _Budget:
    """What a test's `otel_perf` marker asks."""

    max_queries: int | None = None
    allow: frozenset[str] = frozenset()


class OtelPerfSession:
    """The composed parts (provider, analysis processor, query counter, instrumentors) and the
    per-test judgement; registered as a plugin only when enabled."""

    def __init__(
        self,
        provider: TracerProvider,
        processor: TraceAnalysisSpanProcessor,
        findings: _CollectedFindings,
        counter: _QueryCounter,
        instrumentors: list[tuple[str, BaseInstrumentor]],
        fail_on: str,
        rootpath: str,
    ) -> None:
        self.provider = provider
        self.processor = processor
        self.findings = findings
        self.counter = counter
        self.instrumentors = instrumentors
        self.fail_on = fail_on
        self.rootpath = rootpath
        self.config: pytest.Config | None = None

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_report_header(self, config: pytest.Config) -> str:
        instrumented = ", ".join(_INSTRUMENTED[name] for name, _ in self.instrumentors) or "nothing"
        rule = "any N+1" if self.fail_on == FAIL_ON_N_PLUS_ONE else f"findings of severity >= {self.fail_on}"
        return f"otel-perf: tests fail on {rule} in their requests (instrumented: {instrumented})"

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        budget = _budget_of(item)
        self._collect()  # what ran before (fixtures, earlier tests' stragglers) is not this test's
        try:
            result = yield
        except BaseException:
            problems = self._judge(budget)
            if problems:
                item.add_report_section("call", "otel-perf", problems)
            raise
        problems = self._judge(budget)
        if problems:
            pytest.fail(problems, pytrace=False)
        return result

    def _collect(self) -> tuple[list[Finding], list[RequestQueries]]:
        if not self.processor.force_flush(_FLUSH_TIMEOUT_MS):
            logger.warning("otel-perf: analysis did not finish within %d ms", _FLUSH_TIMEOUT_MS)
        return self.findings.take(), self.counter.take()

    def _judge(self, budget: _Budget) -> str:
        """The failure message for what the test's requests did, or "" when they did nothing wrong."""
        findings, requests = self._collect()
        failing = [finding for finding in findings if self._fails(finding, budget)]
        over = [
            request
            for request in requests
            if budget.max_queries is not None and len(request.statements) > budget.max_queries
        ]
        parts = []
        if failing:
            parts.append(self._describe_findings(failing))
        if over:
            parts.append(_describe_budget(over, budget))
        return "\n\n".join(parts)

    def _fails(self, finding: Finding, budget: _Budget) -> bool:
        if finding.type in budget.allow or finding.resolved:
            return False
        if self.fail_on == FAIL_ON_N_PLUS_ONE:
            return finding.type in N_PLUS_ONE_TYPES
        from otel_perf.processors.findings import Severity

        return finding.severity >= Severity.parse(self.fail_on)

    def _describe_findings(self, findings: list[Finding]) -> str:
        """A first line for pytest's short summary, the findings as `otel-perf demo` shows them, then
        where each one's calls were made (the table shows the file's name only) and its trace."""
        first = findings[0]
        location = self._location(first)
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        lines = [f"otel-perf: {first.title}{f' at {location}' if location else ''}{more}"]
        table = self._table(findings)
        if table is not None:
            lines.append(table)
        for finding in findings:
            details = finding.details
            where = self._location(finding)
            role = (details.get("code_location") or {}).get("role")
            lines.append(f"{finding.type} ({finding.severity.label}) in {finding.operation}")
            if table is None:  # a core install, without rich
                lines.append(f"  {finding.title}")
            if where:
                lines.append(f"  at {where}{f' ({role})' if role else ''}")
            if table is None and details.get("suggestion"):
                lines.append(f"  fix: {details['suggestion']}")
            lines.append(f"  trace {finding.trace_id}")
        return "\n".join(lines)

    def _location(self, finding: Finding) -> str:
        """`file:line (function)` of the application code that ran the calls, relative to the rootdir
        when inside it."""
        location = finding.details.get("code_location")
        if not isinstance(location, dict) or not location.get("file"):
            return ""
        path = str(location["file"])
        try:
            relative = os.path.relpath(path, self.rootpath)
        except ValueError:  # another drive
            relative = path
        shown = path if relative.startswith(os.pardir) else relative
        function = location.get("function")
        return f"{shown}:{location.get('line')}{f' in {function}' if function else ''}"

    def _table(self, findings: list[Finding]) -> str | None:
        """The findings as `otel-perf demo` shows them (render.alerts_table), as plain text; None
        without rich (a core install)."""
        try:
            from rich.console import Console

            from otel_perf.render import alerts_table
        except ImportError:
            return None
        width = _MIN_WIDTH
        with contextlib.suppress(Exception):  # no terminal reporter (-p no:terminal)
            width = max(width, self.config.get_terminal_writer().fullwidth if self.config else 0)
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None, highlight=False, emoji=False)
        console.print(alerts_table([finding.to_json() for finding in findings], title="otel-perf findings"))
        return buffer.getvalue().rstrip()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        for _, instrumentor in reversed(self.instrumentors):
            try:
                instrumentor.uninstrument()
            except Exception:
                logger.debug("otel-perf: could not uninstrument", exc_info=True)
        self.provider.shutdown()


def _describe_budget(over: list[RequestQueries], budget: _Budget) -> str:
    lines = []
    for request in over:
        lines.append(
            f"otel-perf: {request.operation} ran {len(request.statements)} SQL queries, over this test's "
            f"budget of {budget.max_queries} (@pytest.mark.{MARKER}(max_queries={budget.max_queries}))"
        )
        for statement, count in Counter(request.statements).most_common(5):
            shown = statement if len(statement) <= _MAX_STATEMENT_CHARS else statement[:119] + "…"
            lines.append(f"  {count:>3}× {shown}")
    return "\n".join(lines)


def _budget_of(item: pytest.Item) -> _Budget:
    """The test's `otel_perf` marker (the closest wins, argument by argument); a typo fails the test
    rather than silently checking nothing."""
    found: dict[str, Any] = {}
    for mark in item.iter_markers(MARKER):
        if mark.args:
            pytest.fail(f"otel-perf: @pytest.mark.{MARKER} takes keyword arguments only", pytrace=False)
        unknown = set(mark.kwargs) - _MARKER_ARGUMENTS
        if unknown:
            pytest.fail(
                f"otel-perf: @pytest.mark.{MARKER} has no argument {', '.join(sorted(unknown))} "
                f"(it takes {', '.join(sorted(_MARKER_ARGUMENTS))})",
                pytrace=False,
            )
        for name, value in mark.kwargs.items():
            found.setdefault(name, value)
    max_queries = found.get("max_queries")
    if max_queries is not None and (
        isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 0
    ):
        pytest.fail(f"otel-perf: max_queries must be a whole number >= 0, not {max_queries!r}", pytrace=False)
    allow = found.get("allow", ())
    if isinstance(allow, str):
        allow = (allow,)
    if not isinstance(allow, Iterable) or not all(isinstance(name, str) for name in allow):
        pytest.fail(
            f"otel-perf: allow must be finding types such as 'n_plus_one', not {allow!r}", pytrace=False
        )
    return _Budget(max_queries, frozenset(allow))


# --- the composition root: only when enabled ---------------------------------------------------------


def _start(config: pytest.Config, *, early: bool) -> OtelPerfSession:
    """Build and install everything; any reason it can't work is a usage error, never a silent
    run that checks nothing."""
    fail_on = _fail_on(config, early=early)
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        raise pytest.UsageError(
            "otel-perf: --otel-perf needs the OpenTelemetry SDK, but OTEL_SDK_DISABLED=true"
        )

    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from otel_perf.bootstrap.configurator import build_processor
    from otel_perf.processors.detectors.unused_eager_load import UnusedEagerLoadSettings
    from otel_perf.processors.errors import SettingsError
    from otel_perf.processors.processor import ProcessorSettings
    from otel_perf.settings import Settings, warn_about_unknown_variables

    try:
        # Every trace analysed (no CPU share), with its call sites, whatever the environment says for
        # production; everything else (detectors' thresholds and scopes) as `OTEL_PERF_*` configures.
        processor_settings = ProcessorSettings.load(
            strict=True, enabled=True, mode="in_process", analysis_cpu_share=1.0, capture_code_location=True
        )
        # A test is judged on its own requests: an eager load it never read is unused from the first.
        eager_settings = UnusedEagerLoadSettings.load(strict=True, min_requests=1)
        settings = Settings.from_env(
            strict=True, processor=processor_settings, unused_eager_load=eager_settings
        )
    except SettingsError as error:
        raise pytest.UsageError(f"otel-perf: {error}") from None
    warn_about_unknown_variables(os.environ)

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        # Unless OTEL_SERVICE_NAME names it: the project (the rootdir), as findings show it.
        resource = resource.merge(Resource({"service.name": config.rootpath.name}))
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
    # SQLAlchemy first: the processor watches the ORM's lazy loads once SQLAlchemy is imported.
    instrumentors = _instrument(provider)
    findings = _CollectedFindings()
    processor = build_processor(settings, findings, watch=False)
    counter = _QueryCounter()

    class QueryCounting(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            counter.on_end(span)

    provider.add_span_processor(processor)
    provider.add_span_processor(QueryCounting())
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # The app's own spans (trace.get_tracer) join the requests' traces.
        trace.set_tracer_provider(provider)
    return OtelPerfSession(
        provider, processor, findings, counter, instrumentors, fail_on, str(config.rootpath)
    )


def _instrument(provider: TracerProvider) -> list[tuple[str, BaseInstrumentor]]:
    """SQLAlchemy (engines created from now on) and FastAPI (apps created from now on), each where
    installed. An installed one its instrumentation skips (a version outside its range) is an error:
    the run would silently check nothing."""
    done: list[tuple[str, BaseInstrumentor]] = []
    for name in _INSTRUMENTED:
        if importlib.util.find_spec(name) is None:
            continue
        if name == "sqlalchemy":
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            instrumentor: BaseInstrumentor = SQLAlchemyInstrumentor()
        else:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            instrumentor = FastAPIInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            raise pytest.UsageError(
                f"otel-perf: {_INSTRUMENTED[name]} is already instrumented in this process (by "
                "opentelemetry-instrument or a sitecustomize?): run pytest without it"
            )
        instrumentor.instrument(tracer_provider=provider)
        if not instrumentor.is_instrumented_by_opentelemetry:
            raise pytest.UsageError(_not_instrumented(name))
        done.append((name, instrumentor))
    return done


def _not_instrumented(name: str) -> str:
    from otel_perf.bootstrap.checks import skipped_instrumentations

    for skipped in skipped_instrumentations():
        if skipped.name == name:
            return skipped.message()
    return f"otel-perf: could not instrument {_INSTRUMENTED[name]}"


_SESSION = pytest.StashKey[OtelPerfSession]()
