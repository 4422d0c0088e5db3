"""`otel-perf analyzer`: the OTLP receivers (gRPC and HTTP, protobuf and JSON, traces and metrics),
health and readiness, Prometheus metrics of its own, and a graceful stop.

Errors follow the OTLP specification: malformed payloads get HTTP 400 / gRPC INVALID_ARGUMENT
(not retried), an unsupported content type 415, an oversized request 413 / RESOURCE_EXHAUSTED,
and a full queue towards the collector HTTP 503 / UNAVAILABLE (retried by the sender).

A trace request is acknowledged once it is back in the collector (or after `max_ack_wait_s`): the
collector's persistent sending queue, not this process, is where accepted telemetry waits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from otel_perf.alerting.router import AlertRouter, RouterSettings, open_outbox
from otel_perf.alerting.sinks import OtlpSink, SinkSettings, build_sinks
from otel_perf.analyzer.auth import TransportSecurity
from otel_perf.analyzer.forwarder import Delivery, Forwarder
from otel_perf.analyzer.otlp_codec import JSON, PROTOBUF, decode
from otel_perf.analyzer.pipeline import AnalysisPipeline
from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.errors import OtlpFormatError, RequestTooLarge, Unavailable, UnsupportedMediaType
from otel_perf.processors import semconv
from otel_perf.processors.config import Section
from otel_perf.processors.detectors.base import Detector
from otel_perf.processors.engine import ENGINE_COUNTERS
from otel_perf.processors.monitors import MonitorSettings, build_watcher

logger = logging.getLogger("otel_perf.analyzer")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


@dataclass
class MetricsStats:
    requests: int = 0
    data_points: int = 0


def _count_points(request: ExportMetricsServiceRequest) -> int:
    total = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


class Analyzer:
    """The service: pipeline, forwarder, alert router, receivers."""

    def __init__(
        self,
        config: AnalyzerSettings,
        *,
        detectors: Sequence[Detector],
        router: RouterSettings,
        sinks: SinkSettings,
        analyses: bool = True,
        skip_marked: bool = True,
        monitor: MonitorSettings | None = None,
        monitors: Mapping[str, Section] | None = None,
    ) -> None:
        """Each part gets its own settings; `analyses`/`skip_marked` as in `AnalysisPipeline`;
        `monitor` (the windows) and `monitors` (by registry name): trends and error rates of every
        request received (None: not watched)."""
        self.config = config
        # First: a token or TLS file it can't use stops the start before any thread runs.
        self.security = TransportSecurity.from_settings(config)
        self.forwarder = Forwarder(
            config.export_endpoint,
            config.export_queue_size,
            config.export_timeout_s,
            config.export_queue_bytes,
        )
        resource = Resource.create({semconv.SERVICE_NAME: "otel-perf-analyzer"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=config.export_endpoint, insecure=True), schedule_delay_millis=200
            )
        )
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=config.export_endpoint, insecure=True), schedule_delay_millis=200
            )
        )
        otlp = OtlpSink(self.tracer_provider, self.logger_provider)
        self.router = AlertRouter(router, build_sinks(sinks, otlp), outbox=open_outbox(router))
        watcher = build_watcher(monitor, monitors, findings=self.router) if monitor and analyses else None
        self.pipeline = AnalysisPipeline(
            config,
            detectors,
            self.forwarder,
            self.router,
            analyses=analyses,
            skip_marked=skip_marked,
            watcher=watcher,
        )
        self.metrics_stats = MetricsStats()
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(self))
        self._grpc_server: grpc.Server | None = None
        self._http_server: uvicorn.Server | None = None
        self._decoding = threading.BoundedSemaphore(8)  # requests decoded at once (memory)
        self.ready = threading.Event()

    # --- shared handling ------------------------------------------------------------------------

    def export_traces(self, payload: bytes, content_type: str = PROTOBUF) -> Delivery | None:
        """Accept a trace request; the sender is answered when its delivery resolves."""
        self._check_size(payload)
        with self._decoding:
            return self.pipeline.ingest(decode(payload, content_type, ExportTraceServiceRequest()))

    def export_metrics(self, payload: bytes, content_type: str = PROTOBUF) -> Delivery | None:
        """Metrics are read here, not forwarded: acknowledged on receipt."""
        self._check_size(payload)
        request = decode(payload, content_type, ExportMetricsServiceRequest())
        self.metrics_stats.requests += 1
        self.metrics_stats.data_points += _count_points(request)
        try:
            self.pipeline.watch_metrics(request)
        except Exception:  # the metrics were received all the same: never a reason to refuse them
            logger.exception("otel-perf analyzer: reading metrics for the monitors failed")
        return None

    def _check_size(self, payload: bytes) -> None:
        if len(payload) > self.config.max_request_bytes:
            raise RequestTooLarge(f"request of {len(payload)} bytes exceeds {self.config.max_request_bytes}")

    def _ack_wait(self, sender_deadline_s: float | None) -> float:
        """How long a reply waits for the request's delivery: `max_ack_wait_s`, ending a little
        before the sender's own deadline (a timed-out sender would send the request again)."""
        wait = self.config.max_ack_wait_s
        if sender_deadline_s is not None:
            wait = min(wait, sender_deadline_s - _DEADLINE_MARGIN_S)
        return max(wait, 0.0)

    def _settled(self, sent: bool | None) -> None:
        """The reply for a delivery's outcome: None (still queued here after the wait) is accepted
        all the same and counted; False (this process gave up on it) asks the sender to retry."""
        if sent is None:
            self.pipeline.stats.acknowledged_before_forwarding += 1
        elif not sent:
            raise Unavailable("the analyzer is stopping before this request went on; send it again")

    # --- gRPC -------------------------------------------------------------------------------------

    def _grpc_handler(self, export: Any) -> Any:
        def handle(payload: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                delivery = export(payload)
                if delivery is not None:
                    try:
                        sent = delivery.result(timeout=self._ack_wait(context.time_remaining()))
                    except futures.TimeoutError:
                        sent = None
                    self._settled(sent)
                return _EMPTY_REPLY
            except OtlpFormatError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except RequestTooLarge as error:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
            except Unavailable as error:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
            except Exception as error:
                logger.exception("otel-perf analyzer: unexpected error handling an export")
                context.abort(grpc.StatusCode.INTERNAL, type(error).__name__)

        # Raw bytes in (no deserializer): decoding errors become INVALID_ARGUMENT, not INTERNAL.
        return grpc.unary_unary_rpc_method_handler(handle)

    def start_grpc(self) -> int:
        config = self.config
        # Handlers wait for deliveries, so more threads than decode at once (`_decoding`).
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="otlp-grpc"),
            interceptors=self.security.grpc_interceptors(),
            options=[("grpc.max_receive_message_length", config.max_request_bytes + 1024)],
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    TRACE_SERVICE, {"Export": self._grpc_handler(self.export_traces)}
                ),
                grpc.method_handlers_generic_handler(
                    METRICS_SERVICE, {"Export": self._grpc_handler(self.export_metrics)}
                ),
            )
        )
        credentials = self.security.grpc_credentials()
        if credentials is None:
            port = server.add_insecure_port(config.grpc_endpoint)
        else:
            port = server.add_secure_port(config.grpc_endpoint, credentials)
        if port == 0:
            raise OSError(f"can't listen on {config.grpc_endpoint} (OTEL_PERF_ANALYZER_GRPC_ENDPOINT)")
        server.start()
        self._grpc_server = server
        return port

    # --- HTTP -------------------------------------------------------------------------------------

    def http_app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            return await self._http_export(request, self.export_traces)

        async def metrics_export(request: Request) -> Response:
            return await self._http_export(request, self.export_metrics)

        async def healthz(_: Request) -> Response:
            alive = self.pipeline.worker_alive
            return JSONResponse(
                {"status": "ok" if alive else "analysis worker stopped"}, status_code=200 if alive else 500
            )

        async def readyz(request: Request) -> Response:
            problems = []
            if not self.ready.is_set():
                problems.append("starting")
            if self.forwarder.nearly_full():
                problems.append(
                    f"export queue to {self.forwarder.endpoint} is nearly full "
                    f"({self.forwarder.queued_bytes} bytes; {self.forwarder.last_error})"
                )
            body: dict[str, Any] = {"status": "ready" if not problems else "not ready"}
            # Open for probes; its reasons (endpoint, errors) only for callers with the token.
            if self.security.refusal(request.headers.get("authorization")) is None:
                body["problems"] = problems
            return JSONResponse(body, status_code=200 if not problems else 503)

        async def prometheus(_: Request) -> Response:
            return PlainTextResponse(
                generate_latest(self.registry).decode(), media_type="text/plain; version=0.0.4"
            )

        return Starlette(
            routes=[
                Route("/v1/traces", traces, methods=["POST"]),
                Route("/v1/metrics", metrics_export, methods=["POST"]),
                Route("/healthz", healthz),
                Route("/readyz", readyz),
                Route("/metrics", prometheus),
            ],
            middleware=self.security.http_middleware(),
        )

    async def _http_export(self, request: Request, export: Any) -> Response:
        content_type = request.headers.get("content-type", "")
        media = JSON if content_type.split(";")[0].strip().lower() == JSON else PROTOBUF
        limit = self.config.max_request_bytes
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        try:
            if encoding not in _ENCODINGS:
                raise UnsupportedMediaType(
                    f"Content-Encoding {encoding!r} is not supported: send gzip or identity (uncompressed)"
                )
            declared = int(request.headers.get("content-length") or 0)  # a valid number: h11 checks
            if declared > limit:
                raise RequestTooLarge(f"request of {declared} bytes exceeds {limit}")
            payload = await _read_at_most(request, limit)
            if encoding == "gzip":
                payload = _gunzip(payload, limit)
            delivery = export(payload, content_type)
            del payload
            if delivery is not None:
                try:
                    wait = asyncio.shield(asyncio.wrap_future(delivery))
                    sent = await asyncio.wait_for(wait, self._ack_wait(None))
                except asyncio.TimeoutError:
                    sent = None
                self._settled(sent)
        except UnsupportedMediaType as error:
            return _status_response(415, code_pb2.INVALID_ARGUMENT, str(error), PROTOBUF)
        except OtlpFormatError as error:
            return _status_response(400, code_pb2.INVALID_ARGUMENT, str(error), media)
        except RequestTooLarge as error:
            return _status_response(413, code_pb2.RESOURCE_EXHAUSTED, str(error), media)
        except Unavailable as error:
            return _status_response(503, code_pb2.UNAVAILABLE, str(error), media, retry_after=True)
        if media == JSON:
            return Response(b"{}", media_type=JSON)
        return Response(_EMPTY_REPLY, media_type=PROTOBUF)

    # --- lifecycle --------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then drain: analyse what is held, deliver, forward."""
        grpc_port = self.start_grpc()
        host, _, port = self.config.http_endpoint.rpartition(":")
        config = uvicorn.Config(
            self.http_app(),
            host=host or "127.0.0.1",
            port=int(port),
            log_level="warning",
            # In-flight requests wait up to max_ack_wait_s for their delivery: let them finish.
            **self.security.uvicorn_options(grace_s=self.config.max_ack_wait_s + 2),
        )
        self._http_server = uvicorn.Server(config)
        logger.info(
            "otel-perf analyzer: OTLP gRPC on %s (port %d) and HTTP on %s, %s; forwarding to %s",
            self.config.grpc_endpoint,
            grpc_port,
            self.config.http_endpoint,
            ("TLS" if self.security.tls else "plain text")
            + (", bearer token required" if self.security.requires_token else ", no token"),
            self.config.export_endpoint,
        )
        endpoints = {"OTLP/gRPC": self.config.grpc_endpoint, "OTLP/HTTP": self.config.http_endpoint}
        for warning in self.security.warnings(endpoints):
            logger.warning("%s", warning)
        self.ready.set()
        if threading.current_thread() is threading.main_thread():
            # uvicorn (0.29+) raises the signal that stopped it again once it has shut down, under
            # the handler it found: the default one ended the process right there (SIGTERM: exit
            # -15), before the drain below, losing every trace held and request queued.
            for stop_signal in (signal.SIGTERM, signal.SIGINT):
                signal.signal(stop_signal, _already_stopping)
        try:
            self._http_server.run()  # installs SIGTERM/SIGINT handlers, returns on either
        finally:
            self.stop()

    def stop(self) -> None:
        self.ready.clear()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=2).wait(3)
        self.pipeline.drain()
        self.router.shutdown()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.forwarder.close()


def _already_stopping(signum: int, frame: Any) -> None:
    """Under `serve`, outside uvicorn's own handling: the stop is under way (see `serve`)."""


_ENCODINGS = ("identity", "gzip")
_EMPTY_REPLY = b""  # an Export*ServiceResponse with no partial success, encoded
_DEADLINE_MARGIN_S = 1.0


async def _read_at_most(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes `limit` while it streams in: a chunked request
    declares no length, and reading it whole first would hold all of it in memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(payload: bytes, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 allows several; Go's reader reads them all). One cut
    short, or followed by bytes that are no gzip, is a 400: only the first member was read before,
    and such a request was accepted with part of its spans (or refused as bad protobuf)."""
    import zlib

    parts: list[bytes] = []
    size, rest = 0, payload
    try:
        while True:
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            part = decompressor.decompress(rest, limit + 1 - size)
            size += len(part)
            if size > limit:
                raise RequestTooLarge(f"decompressed request exceeds {limit} bytes")
            parts.append(part)
            if not decompressor.eof:
                raise OtlpFormatError("invalid gzip body: cut short")
            rest = decompressor.unused_data
            if not rest:
                return b"".join(parts)
    except zlib.error as error:
        raise OtlpFormatError(f"invalid gzip body: {error}") from None


def _status_response(
    http_status: int, code: int, message: str, media: str, retry_after: bool = False
) -> Response:
    status = status_pb2.Status(code=code, message=message)
    headers = {"Retry-After": "1"} if retry_after else None
    if media == JSON:
        return JSONResponse({"code": code, "message": message}, status_code=http_status, headers=headers)
    return Response(status.SerializeToString(), status_code=http_status, media_type=PROTOBUF, headers=headers)


class _StatsCollector:
    """Prometheus view of the analyzer's counters (read at scrape time, no double bookkeeping)."""

    def __init__(self, analyzer: Analyzer) -> None:
        self.analyzer = analyzer

    def collect(self) -> Any:
        pipeline, router = self.analyzer.pipeline.stats, self.analyzer.router.stats
        forwarder = self.analyzer.forwarder
        # The engine's counters, named after its stats fields (`ENGINE_COUNTERS`), then the analyzer's.
        for counter in ENGINE_COUNTERS:
            name = f"otel_perf_analyzer_{counter.field}"
            if counter.by_reason is None:
                family = CounterMetricFamily(name, counter.description)
                family.add_metric([], getattr(pipeline, counter.field))
            else:
                family = CounterMetricFamily(name, counter.description, labels=["reason"])
                for reason, count in dict(getattr(pipeline, counter.by_reason)).items():
                    family.add_metric([reason], count)
            yield family
        counters = {
            "otel_perf_analyzer_requests": ("OTLP trace requests accepted.", pipeline.requests),
            "otel_perf_analyzer_spans_received": ("Spans received.", pipeline.spans_received),
            "otel_perf_analyzer_findings_already_alerted": (
                "Findings the app had already alerted (mode both).",
                pipeline.findings_already_alerted,
            ),
            "otel_perf_analyzer_alerts_sent": ("Alerts delivered to the sinks.", router.sent),
            "otel_perf_analyzer_alerts_suppressed": (
                "Findings not alerted (cooldown, rate limit, severity).",
                router.suppressed_duplicate + router.suppressed_rate_limit + router.suppressed_severity,
            ),
            "otel_perf_analyzer_rejected_bad_request": (
                "Malformed requests rejected.",
                pipeline.rejected_bad_request,
            ),
            "otel_perf_analyzer_rejected_unavailable": (
                "Requests refused: export queue full.",
                pipeline.rejected_unavailable,
            ),
            "otel_perf_analyzer_forwarded": ("Requests forwarded to the collector.", forwarder.sent),
            "otel_perf_analyzer_rejected_unauthenticated": (
                "Requests refused for want of a valid bearer token (gRPC UNAUTHENTICATED, HTTP 401).",
                self.analyzer.security.refusals.total,
            ),
            "otel_perf_analyzer_acknowledged_before_forwarding": (
                "Requests acknowledged after max_ack_wait_s while still queued here (lost if killed).",
                pipeline.acknowledged_before_forwarding,
            ),
            "otel_perf_analyzer_forward_dropped": ("Requests dropped on the way back.", forwarder.dropped),
            "otel_perf_analyzer_metric_points_received": (
                "Metric data points received.",
                self.analyzer.metrics_stats.data_points,
            ),
        }
        for name, (documentation, value) in counters.items():
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family
        gauges = {
            "otel_perf_analyzer_buffered_spans": (
                "Spans held for analysis.",
                self.analyzer.pipeline.buffered_spans,
            ),
            "otel_perf_analyzer_buffered_traces": (
                "Traces held for analysis.",
                self.analyzer.pipeline.buffered_traces,
            ),
            "otel_perf_analyzer_export_queue": (
                "Requests waiting to go back to the collector.",
                forwarder.depth,
            ),
            "otel_perf_analyzer_export_queue_bytes": (
                "Their encoded size in bytes.",
                forwarder.queued_bytes,
            ),
        }
        for name, (documentation, value) in gauges.items():
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], value)
            yield gauge
        failed = CounterMetricFamily(
            "otel_perf_analyzer_sink_failures", "Failed alert deliveries.", labels=["sink"]
        )
        for sink, count in router.sink_failures.items():
            failed.add_metric([sink], count)
        yield failed
