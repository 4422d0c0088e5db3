"""`otel-perf analyzer`: the OTLP receivers (gRPC and HTTP, protobuf and JSON, traces and metrics),
health and readiness, Prometheus metrics of its own, and a graceful stop.

Errors follow the OTLP specification: malformed payloads get HTTP 400 / gRPC INVALID_ARGUMENT
(not retried), an unsupported content type 415, an oversized request 413 / RESOURCE_EXHAUSTED,
and a full queue towards the collector HTTP 503 / UNAVAILABLE (retried by the sender).
"""

from __future__ import annotations

import logging
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
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
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
from otel_perf.analyzer.forwarder import Forwarder
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
        self.ready = threading.Event()

    # --- shared handling ------------------------------------------------------------------------

    def export_traces(self, payload: bytes, content_type: str = PROTOBUF) -> ExportTraceServiceResponse:
        self._check_size(payload)
        self.pipeline.ingest(decode(payload, content_type, ExportTraceServiceRequest()))
        return ExportTraceServiceResponse()

    def export_metrics(self, payload: bytes, content_type: str = PROTOBUF) -> ExportMetricsServiceResponse:
        self._check_size(payload)
        request = decode(payload, content_type, ExportMetricsServiceRequest())
        self.metrics_stats.requests += 1
        self.metrics_stats.data_points += _count_points(request)
        try:
            self.pipeline.watch_metrics(request)
        except Exception:  # the metrics were received all the same: never a reason to refuse them
            logger.exception("otel-perf analyzer: reading metrics for the monitors failed")
        return ExportMetricsServiceResponse()

    def _check_size(self, payload: bytes) -> None:
        if len(payload) > self.config.max_request_bytes:
            raise RequestTooLarge(f"request of {len(payload)} bytes exceeds {self.config.max_request_bytes}")

    # --- gRPC -------------------------------------------------------------------------------------

    def _grpc_handler(self, export: Any) -> Any:
        def handle(payload: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                reply: bytes = export(payload).SerializeToString()
                return reply
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
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc"),
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
        port = server.add_insecure_port(config.grpc_endpoint)
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

        async def readyz(_: Request) -> Response:
            problems = []
            if not self.ready.is_set():
                problems.append("starting")
            if self.forwarder.nearly_full():
                problems.append(
                    f"export queue to {self.forwarder.endpoint} is nearly full "
                    f"({self.forwarder.queued_bytes} bytes; {self.forwarder.last_error})"
                )
            body = {"status": "ready" if not problems else "not ready", "problems": problems}
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
            ]
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
            response = export(payload, content_type)
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
        return Response(response.SerializeToString(), media_type=PROTOBUF)

    # --- lifecycle --------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then drain: analyse what is held, deliver, forward."""
        grpc_port = self.start_grpc()
        host, _, port = self.config.http_endpoint.rpartition(":")
        config = uvicorn.Config(
            self.http_app(), host=host or "127.0.0.1", port=int(port), log_level="warning"
        )
        self._http_server = uvicorn.Server(config)
        logger.info(
            "otel-perf analyzer: OTLP gRPC on %s (port %d), HTTP on %s; forwarding to %s",
            self.config.grpc_endpoint,
            grpc_port,
            self.config.http_endpoint,
            self.config.export_endpoint,
        )
        self.ready.set()
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


_ENCODINGS = ("identity", "gzip")


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
    import zlib

    try:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = decompressor.decompress(payload, limit + 1)
    except zlib.error as error:
        raise OtlpFormatError(f"invalid gzip body: {error}") from None
    if len(data) > limit:
        raise RequestTooLarge(f"decompressed request exceeds {limit} bytes")
    return data


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
