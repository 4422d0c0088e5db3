"""What makes two client spans "the same call", and which client spans only echo another one.

An echo is a second span of one round trip: with `opentelemetry-bootstrap -a install`, the
database driver's instrumentation (sqlite3, psycopg, asyncpg, dbapi) traces each query the ORM's
instrumentation already traced, and urllib3's each call requests traced. The echo has the same
signature, runs inside the first span's time, as its child or as its sibling (the SQLAlchemy
instrumentation does not make its span current), and comes from another instrumentation scope.
Detectors skip echoes: one query is one query.
"""

from __future__ import annotations

from collections.abc import Iterator

from otel_perf.processors.normalize import (
    cache_command_template,
    is_transaction_control,
    normalize_sql,
    url_template,
)
from otel_perf.processors.semconv import CACHE_SYSTEMS, DOCUMENT_SYSTEMS
from otel_perf.processors.tree import SpanNode

Signature = tuple[str, ...]


_NOT_A_CALL = ("",)


def signature(node: SpanNode) -> Signature | None:
    """What makes two sibling spans 'the same call': kind (db, cache, http) and template; None for
    spans that are no call of their own (internal work, a pool checkout, BEGIN/COMMIT). Kept on
    the node: every detector asks."""
    memo = node.call_signature
    if memo is None:
        memo = node.call_signature = _signature(node) or _NOT_A_CALL
    return None if memo is _NOT_A_CALL else memo


def _signature(node: SpanNode) -> Signature | None:
    if node.db_system in CACHE_SYSTEMS:
        return ("cache", cache_command_template(node.statement or node.name))
    if node.is_connection_checkout:
        # Taking a connection from the pool, once per `engine.connect()`: part of a loop, not its call.
        return None
    if node.statement is not None:
        template = statement_template(node)
        return None if is_transaction_control(template) else ("db", template)
    if node.db_system is not None:
        return ("db", f"{node.db_system} {node.name}")
    if node.is_http_client:
        return ("http", node.http_method or "GET", url_template(node.http_url or ""))
    return None


def statement_template(node: SpanNode) -> str:
    """A DB or cache span's statement without literals (SQL, or a cache command with its key's ids
    dropped): what may leave in an alert. Callers check `node.statement is not None`."""
    statement = node.statement or ""
    if node.db_system in CACHE_SYSTEMS:
        return cache_command_template(statement)
    template = normalize_sql(statement, node.db_system)
    if node.db_system in DOCUMENT_SYSTEMS and node.db_collection and " " not in template:
        # pymongo's statement is the bare command (`find`): the collection tells one query from another.
        return f"{template} {node.db_collection}"
    return template


def overlaps(previous_end_ns: int, member: SpanNode, previous: SpanNode, tolerance: float) -> bool:
    """Whether `member` started before `previous` (ending at `previous_end_ns`) was done, by more
    than `tolerance` of the shorter one's duration: an async driver reporting the end late, or two
    hosts' clocks, make a loop's spans touch without making it concurrent."""
    allowed = tolerance * min(member.duration_ns, previous.duration_ns)
    return member.start_ns < previous_end_ns - allowed


def _echoes(inner: SpanNode, outer: SpanNode) -> bool:
    """`inner` runs inside `outer`'s time and comes from another instrumentation (a loop's repeats, or
    concurrent identical queries, come from the same one and are not echoes)."""
    return outer.start_ns <= inner.start_ns and inner.end_ns <= outer.end_ns and inner.scope != outer.scope


def _calls(children: list[SpanNode]) -> Iterator[tuple[SpanNode, Signature, bool]]:
    """(span, signature, whether it echoes an earlier sibling) for each sibling that is a call, in
    start order. Linear: each is compared with the last call of its signature."""
    last_call: dict[Signature, SpanNode] = {}
    for child in children:
        key = signature(child)
        if key is None:
            continue
        outer = last_call.get(key)
        if outer is not None and _echoes(child, outer):
            yield child, key, True
        else:
            last_call[key] = child
            yield child, key, False


def calls_among(children: list[SpanNode]) -> list[tuple[SpanNode, Signature]]:
    """The siblings that are calls, echoes left out, in start order, with their signatures."""
    return [(child, key) for child, key, echo in _calls(children) if not echo]


def describe(key: Signature) -> str:
    """A call's signature as a person reads it: the statement, or `GET <url template>`."""
    return " ".join(key[1:])


def group_calls(children: list[SpanNode]) -> dict[Signature, list[SpanNode]]:
    """Sibling calls by signature, echoes left out (one pass: this runs for every parent)."""
    groups: dict[Signature, list[SpanNode]] = {}
    for child, key, echo in _calls(children):
        if not echo:
            groups.setdefault(key, []).append(child)
    return groups


def echoes_among(children: list[SpanNode]) -> set[int]:
    """Ids of the siblings (sorted by start, as in a tree) that echo an earlier sibling."""
    return {child.span_id for child, _, echo in _calls(children) if echo}


def is_echo(node: SpanNode) -> bool:
    """Whether `node` echoes its parent's call or an earlier sibling's (see the module docstring)."""
    parent = node.parent
    if parent is None:
        return False
    key = signature(node)
    if key is None:
        return False
    if _echoes(node, parent) and signature(parent) == key:
        return True
    return node.span_id in echoes_among(parent.children)
