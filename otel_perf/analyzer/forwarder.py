"""Sends analysed requests back to the collector over OTLP/gRPC, in order, retrying until it can.

A bounded queue in front: while the collector is away, requests wait (and retry with backoff);
when the queue is full, the pipeline answers UNAVAILABLE upstream, so the collector's own queue
holds the data instead of this process dropping it. Each request carries a `Delivery` future,
resolved once it left (sent, or dropped for good): the receivers acknowledge the sender then.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

logger = logging.getLogger("otel_perf.analyzer")

# The OTLP specification's retryable codes. Not INTERNAL: the collector answers it for a request it
# can't read (e.g. a span id of the wrong length), and retrying that would stall the whole way back.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # unless the message is too large: that is split, not retried
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DATA_LOSS,
}

# Resolved once a request left this process: True when it was settled downstream (taken, or refused
# as malformed: sending it again would not help), False when it was not (shutdown, queue full),
# so the sender should retry it.
Delivery = Future[bool]


def delivered(delivery: Delivery | None, sent: bool) -> None:
    """Resolve a delivery once; a request split in parts or closed at shutdown may come twice."""
    if delivery is not None and not delivery.done():
        delivery.set_result(sent)


def _too_large(error: grpc.RpcError) -> bool:
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (error.details() or "")


def split(request: ExportTraceServiceRequest) -> list[ExportTraceServiceRequest]:
    """Two halves of a request (by resource, then scope, then span); [] when it is one span."""
    halves = []
    if len(request.resource_spans) > 1:
        middle = len(request.resource_spans) // 2
        for part in (request.resource_spans[:middle], request.resource_spans[middle:]):
            halves.append(ExportTraceServiceRequest(resource_spans=part))
        return halves
    if not request.resource_spans:
        return []
    resource_spans = request.resource_spans[0]
    if len(resource_spans.scope_spans) > 1:
        middle = len(resource_spans.scope_spans) // 2
        parts = (resource_spans.scope_spans[:middle], resource_spans.scope_spans[middle:])
        return [
            ExportTraceServiceRequest(
                resource_spans=[
                    ResourceSpans(
                        resource=resource_spans.resource,
                        scope_spans=part,
                        schema_url=resource_spans.schema_url,
                    )
                ]
            )
            for part in parts
        ]
    if not resource_spans.scope_spans or len(resource_spans.scope_spans[0].spans) < 2:
        return []
    scope_spans = resource_spans.scope_spans[0]
    middle = len(scope_spans.spans) // 2
    return [
        ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=resource_spans.resource,
                    schema_url=resource_spans.schema_url,
                    scope_spans=[
                        ScopeSpans(scope=scope_spans.scope, spans=part, schema_url=scope_spans.schema_url)
                    ],
                )
            ]
        )
        for part in (scope_spans.spans[:middle], scope_spans.spans[middle:])
    ]


class Forwarder:
    """Requests on their way back to the collector, bounded in count and in bytes (their encoded
    size): a dead collector fills it, the pipeline then answers UNAVAILABLE so the collector keeps
    what it can't send in its own queue, and readiness turns false before that (`nearly_full`)."""

    def __init__(
        self, endpoint: str, queue_size: int = 1000, timeout_s: float = 10.0, max_bytes: int = 128 * 1024**2
    ) -> None:
        self.endpoint = endpoint
        self._timeout = timeout_s
        self._channel = grpc.insecure_channel(endpoint)
        self._stub = TraceServiceStub(self._channel)  # type: ignore[no-untyped-call]  # generated code
        self._queue: queue.Queue[tuple[Any, int, Delivery | None]] = queue.Queue(queue_size)
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self.sent = 0
        self.failed_attempts = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._trimmer = _Trimmer()
        self._worker = threading.Thread(target=self._run, name="otel-perf-forwarder", daemon=True)
        self._worker.start()

    def full(self) -> bool:
        return self._queue.full() or self.queued_bytes >= self.max_bytes

    def nearly_full(self) -> bool:
        """Past 80 % of either bound: time to send elsewhere (readiness), before requests are refused."""
        return self._queue.qsize() >= 0.8 * self._queue.maxsize or self.queued_bytes >= 0.8 * self.max_bytes

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def reserve(self, size: int) -> bool:
        """Room for a request of `size` bytes accepted now and put later (after analysis); False
        when there is none (one request always fits an empty queue, whatever its size)."""
        with self._bytes_lock:
            if self._queue.full() or (self.queued_bytes and self.queued_bytes + size > self.max_bytes):
                return False
            self.queued_bytes += size
            return True

    def release(self, size: int) -> None:
        with self._bytes_lock:
            self.queued_bytes -= size

    def put(self, request: Any, size: int, delivery: Delivery | None = None) -> bool:
        """Queue a request whose room was reserved; `delivery` is resolved once it left."""
        try:
            self._queue.put_nowait((request, size, delivery))
            return True
        except queue.Full:
            self.dropped += 1
            self.release(size)
            delivered(delivery, False)
            return False

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            try:
                request, size, delivery = self._queue.get(timeout=0.2)
            except queue.Empty:
                self._trimmer.idle()
                continue
            sent = False
            try:
                sent = self._send(request)
            finally:
                self.release(size)
                self._queue.task_done()
                delivered(delivery, sent)
                # Not kept until the next request comes: a 30 MB request is ~100 MB decoded.
                request = delivery = None
                self._trimmer.released(size)

    def _send(self, request: Any) -> bool:
        """True once every part of `request` was settled by the collector (taken, or refused for
        good); False when this process gave up at shutdown."""
        delay = 0.1
        while True:
            try:
                self._stub.Export(request, timeout=self._timeout)
                self.sent += 1
                self.last_error = None
                return True
            except grpc.RpcError as error:
                code = error.code()
                self.failed_attempts += 1
                self.last_error = f"{code.name}: {error.details()}"
                if _too_large(error):
                    halves = split(request)
                    if not halves:
                        self.dropped += 1
                        logger.error(
                            "otel-perf analyzer: a single span is too large for %s; dropped", self.endpoint
                        )
                    return all([self._send(half) for half in halves])
                if code not in _RETRYABLE:
                    self.dropped += 1
                    logger.error(
                        "otel-perf analyzer: the collector rejected a request (%s); dropped", self.last_error
                    )
                    return True
                if self.failed_attempts in (1, 10) or self.failed_attempts % 100 == 0:
                    logger.warning(
                        "otel-perf analyzer: can't reach %s (%s); retrying", self.endpoint, self.last_error
                    )
                if time.monotonic() + delay > self._give_up_at:
                    self.dropped += 1
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (retrying for up to `timeout_s`), then stop."""
        self._give_up_at = time.monotonic() + timeout_s
        self._stopping.set()
        self._worker.join(timeout=timeout_s + 1)
        self._channel.close()

    _give_up_at = float("inf")


class _Trimmer:
    """Gives the heap memory large requests freed back to the system. glibc keeps it otherwise:
    after one 26 MiB request of 340k spans went on, RSS stayed 180 MB above where it was, 50 MB
    after `malloc_trim` (BENCHMARKS.md, figure 10). Run by the forwarder's thread when its queue
    is idle, once 16 MiB of requests left since the last time, at most once a second; a no-op
    without glibc, and for good after any failure (memory kept, never lost)."""

    def __init__(self, after_bytes: int = 16 * 1024 * 1024, every_s: float = 1.0) -> None:
        self._after_bytes = after_bytes
        self._every_s = every_s
        self._released = 0
        self._last = 0.0
        self._trim = _malloc_trim()

    def released(self, size: int) -> None:
        self._released += size

    def idle(self) -> None:
        if self._trim is None or self._released < self._after_bytes:
            return
        now = time.monotonic()
        if now - self._last < self._every_s:
            return
        self._released, self._last = 0, now
        try:
            self._trim(0)
        except Exception:
            self._trim = None


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None (musl, macOS, Windows)."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (AttributeError, OSError, ValueError):
        return None
