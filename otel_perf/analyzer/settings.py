"""`OTEL_PERF_ANALYZER_*`: where the analyzer listens, where it sends traces back, its bounds."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from otel_perf.processors.config import Section


class AnalyzerSettings(Section):
    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_ANALYZER_")

    grpc_endpoint: str = Field(
        "127.0.0.1:14317", description="OTLP/gRPC listen address (loopback unless told)."
    )
    http_endpoint: str = Field(
        "127.0.0.1:14318", description="OTLP/HTTP listen address; also serves /healthz, /readyz, /metrics."
    )
    export_endpoint: str = Field(
        "127.0.0.1:4327",
        description="OTLP/gRPC endpoint (the collector's `otlp/analyzed` receiver) that gets every trace "
        "back, flagged spans annotated, plus alert spans and log records.",
    )
    trace_wait_ms: float = Field(
        200, ge=0, description="After a trace's last span arrives, wait this long for more before analysing."
    )
    max_trace_hold_s: float = Field(
        30,
        gt=0,
        description="A trace still receiving spans after this long is analysed and forwarded all the "
        "same (its later spans are a new part): nothing is held back from the collector for ever.",
    )
    max_buffered_spans: int = Field(
        500_000,
        ge=1,
        description="Spans held for analysis; beyond, traces pass through unanalysed (counted).",
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Larger OTLP requests get 413/RESOURCE_EXHAUSTED."
    )
    export_queue_size: int = Field(
        1000,
        ge=1,
        description="Requests waiting to go back to the collector; when full, ingestion answers "
        "UNAVAILABLE/503 so the collector retries.",
    )
    export_queue_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description="… and their encoded bytes; /readyz turns false past 80 % of either bound.",
    )
    export_timeout_s: float = Field(10, gt=0, description="Per export attempt to the collector.")

    @field_validator("grpc_endpoint", "http_endpoint", "export_endpoint")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        """`host:port`, checked here: a bad one used to be a traceback at start (HTTP) or a silently
        random port (gRPC)."""
        text = value.strip()
        host, colon, port = text.rpartition(":")
        if text.lower().startswith(("http://", "https://")):
            raise ValueError("must be host:port (e.g. 127.0.0.1:14317), not a URL")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port with a port from 1 to 65535, e.g. 127.0.0.1:14317")
        return text
