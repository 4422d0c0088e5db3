"""Detection breadth on the analyzer host: tests/apps/breadth.py (real uvicorn, SQLAlchemy on SQLite,
Redis, httpx) exports to the real collector with in-process analysis off (`OTEL_PERF_MODE=collector`);
the analyzer behind the collector must find what the in-process host finds
(tests/test_detection_breadth.py): concurrent N+1s, M+N loops, consecutive independent calls,
Redis N+1s, one N+1 through interleaved `connect` spans, a job filed under its root span, and
silence on the healthy twins."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.apps import wait_until
from tests.support.redis import Redis
from tests.support.stack import RunningStack
from tests.test_detection_breadth import (
    JOBS,
    NEGATIVE,
    POSITIVE,
    Alert,
    check_concurrent,
    check_connections,
    check_consecutive_db,
    check_consecutive_http,
    check_contract,
    check_mixed,
    check_mounted_sub_app,
    check_negatives_silent,
    check_nightly_report,
    check_only_allowed,
    check_outside_requests,
    check_redis,
    check_resolver,
    drive,
    launch_breadth,
    quiesce,
)

SERVICE = "breadth"
# (operation, type) pairs the analyzer must report, for waiting; the checks below say the rest.
EXPECTED = {
    ("GET /concurrent/db", "n_plus_one"),
    ("GET /concurrent/http", "n_plus_one"),
    ("GET /resolver/books", "mn_plus_one"),
    ("GET /mixed/prices", "mn_plus_one"),
    ("GET /consecutive/db", "consecutive_calls"),
    ("GET /consecutive/http", "consecutive_calls"),
    ("GET /cache/sync", "n_plus_one"),
    ("GET /cache/async", "n_plus_one"),
    ("GET /connections/loop", "n_plus_one"),
    ("nightly-report", "n_plus_one"),
}
CHECKS: dict[str, Callable[[list[Alert]], None]] = {
    "concurrent N+1 (async SQLAlchemy, httpx)": check_concurrent,
    "resolver loop (mn_plus_one)": check_resolver,
    "HTTP call + query per item (mn_plus_one)": check_mixed,
    "consecutive independent queries": check_consecutive_db,
    "consecutive independent HTTP calls": check_consecutive_http,
    "Redis N+1 (sync, asyncio; MGET silent)": check_redis,
    "connection per query: one N+1, nothing about connect": check_connections,
    "background job under its root span": check_nightly_report,
    "mounted sub-application under its whole route": check_mounted_sub_app,
    "start-up and background work": check_outside_requests,
    "healthy endpoints and negatives silent": check_negatives_silent,
    "nothing else reported": check_only_allowed,
    "alert contract, no literals": check_contract,
}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    server = Redis.start()
    yield server
    server.stop()


def test_the_analyzer_finds_what_the_app_would(
    stack: RunningStack, redis_server: Redis, tmp_path: Path
) -> None:
    app = launch_breadth(
        tmp_path / "breadth",
        redis_server.url,
        export={**stack.app_export_env(), "OTEL_PERF_MODE": "collector"},
    )
    try:
        drive(app, [*POSITIVE, *NEGATIVE, *JOBS])

        def analyzer_alerts() -> list[Alert]:
            return [alert for alert in stack.analyzer_alerts() if alert["service"] == SERVICE]

        def arrived() -> bool:
            return {(alert["operation"], alert["type"]) for alert in analyzer_alerts()} >= EXPECTED

        with contextlib.suppress(AssertionError):  # what is missing is named by the checks below
            wait_until(arrived, timeout=30, interval=0.5, what="the analyzer's findings")
        alerts = quiesce(analyzer_alerts, minimum=2, stable=3)
        assert alerts, "the analyzer reported nothing for the breadth app"
        assert {alert["source"] for alert in alerts} == {"collector"}
        # In-process analysis is off: the app itself wrote nothing.
        time.sleep(0.5)
        assert app.alerts() == []

        failures = []
        for name, check in CHECKS.items():
            try:
                check(alerts)
            except AssertionError as error:
                failures.append(f"--- {name}:\n{error}")
        assert not failures, f"{len(failures)} of {len(CHECKS)} checks failed:\n" + "\n".join(failures)
    finally:
        app.stop()
