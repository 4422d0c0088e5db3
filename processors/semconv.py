"""Read the attributes detectors need, from both generations of OpenTelemetry semantic conventions.

Instrumentations switch between the old (`db.statement`, `http.url`, …) and the stable
(`db.query.text`, `url.full`, …) names with `OTEL_SEMCONV_STABILITY_OPT_IN`, and other languages'
SDKs emit either. Every reader of span attributes in otel-perf goes through this module, so a
renamed convention is fixed in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Each logical field lists its attribute keys, preferred (stable) name first.
DB_SYSTEM = ("db.system.name", "db.system")
DB_STATEMENT = ("db.query.text", "db.statement")
DB_COLLECTION = ("db.collection.name", "db.mongodb.collection")
HTTP_METHOD = ("http.request.method", "http.method")
HTTP_URL = ("url.full", "http.url")
HTTP_ROUTE = ("http.route",)
HTTP_STATUS = ("http.response.status_code", "http.status_code")
SERVER_ADDRESS = ("server.address", "net.peer.name", "http.host")
SERVER_PORT = ("server.port", "net.peer.port")
URL_PATH = ("url.path", "http.target")
CODE_FILE = ("code.file.path", "code.filepath")
CODE_LINE = ("code.line.number", "code.lineno")
CODE_FUNCTION = ("code.function.name", "code.function")

# `db.system` values of key-value caches: their calls are kind `cache`, their statements commands
# with keys (`GET authors:1`), not SQL.
CACHE_SYSTEMS = frozenset(("redis", "memcached", "valkey"))
# … of document stores whose statement may be the bare command (`find`), the collection aside.
DOCUMENT_SYSTEMS = frozenset(("mongodb",))

# Resource attributes.
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"

# Attributes otel-perf adds: on flagged spans, on alert spans and log records.
PERF_ISSUE = "perf.issue"
PERF_ISSUES = "perf.issues"  # every finding type of a span flagged more than once (a string array)
PERF_FINGERPRINT = "perf.issue.fingerprint"
PERF_SEVERITY = "perf.severity"
ALERT_JSON = "alert.json"  # the whole alert, on its log record
ALERT_DETAILS_PREFIX = "details."  # `details.count`, `details.code_location.line`, …
PERF_ORM_LAZY_LOAD = "perf.orm.lazy_load"
PERF_ORM_LAZY_LOAD_DIRECTION = "perf.orm.lazy_load.direction"  # many_to_one, one_to_many, many_to_many
# On a query span: relationships it loaded eagerly that the request never read ("Order.items"), and
# how each was loaded, in the same order (selectinload, joinedload, subqueryload, lazy="selectin", …).
PERF_ORM_EAGER_UNUSED = "perf.orm.eager_unused"
PERF_ORM_EAGER_UNUSED_STRATEGY = "perf.orm.eager_unused.strategy"
# On SQLAlchemy's `connect` span: the pool opened a new connection (its time is the handshake).
PERF_DB_NEW_CONNECTION = "perf.db.new_connection"
ALERT_SPAN_NAME = "perf.alert"

# key → (SpanNode field, rank): one pass over a span's attributes fills every field, the
# lowest rank (the stable convention) winning when both generations are present.
NODE_FIELDS: dict[str, tuple[str, int]] = {
    key: (field, rank)
    for field, keys in (
        ("db_system", DB_SYSTEM),
        ("statement", DB_STATEMENT),
        ("db_collection", DB_COLLECTION),
        ("http_method", HTTP_METHOD),
        ("http_url", HTTP_URL),
        ("http_route", HTTP_ROUTE),
        ("http_status", HTTP_STATUS),
        ("server_address", SERVER_ADDRESS),
        ("code_file", CODE_FILE),
        ("code_line", CODE_LINE),
        ("code_function", CODE_FUNCTION),
        ("orm_lazy_load", (PERF_ORM_LAZY_LOAD,)),
        ("orm_direction", (PERF_ORM_LAZY_LOAD_DIRECTION,)),
        ("perf_fingerprint", (PERF_FINGERPRINT,)),
    )
    for rank, key in enumerate(keys)
}

# Every key any reader above looks at: adapters that convert attribute lists use it to skip the rest.
INTERESTING_KEYS = frozenset(
    DB_SYSTEM
    + DB_STATEMENT
    + DB_COLLECTION
    + HTTP_METHOD
    + HTTP_URL
    + HTTP_ROUTE
    + HTTP_STATUS
    + SERVER_ADDRESS
    + SERVER_PORT
    + URL_PATH
    + CODE_FILE
    + CODE_LINE
    + CODE_FUNCTION
    + (PERF_ISSUE, PERF_FINGERPRINT, PERF_ORM_LAZY_LOAD, PERF_ORM_LAZY_LOAD_DIRECTION)
    + (PERF_ORM_EAGER_UNUSED, PERF_ORM_EAGER_UNUSED_STRATEGY, PERF_DB_NEW_CONNECTION)
)


def first(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first key present, or None."""
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None
