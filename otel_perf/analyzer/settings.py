"""`OTEL_PERF_ANALYZER_*`: where the analyzer listens, who may talk to it, where it sends traces back,
its bounds."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
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
        description="Spans held for analysis; beyond, traces pass through unanalysed (counted). Each "
        "held span costs ~0.25 KB besides its request's own memory (~125 MB at the default).",
    )
    max_request_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        le=2**31 - 1 - 1024,  # gRPC's message limit is a C int (plus the margin the server adds)
        description="Larger OTLP requests get 413/RESOURCE_EXHAUSTED. A request of small spans takes "
        "up to ~10x its size in memory while it is decoded, analysed and forwarded (26 MiB of 340k spans: "
        "255 MB at its peak).",
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
        description="… and their encoded bytes; /readyz turns false past 80 % of either bound. Requests "
        "count here from their receipt until they went on, so this bounds their memory too: up to ~10x it "
        "for requests of small spans (received, decoded and analysed at once), ~1.2 GB at the default.",
    )
    export_timeout_s: float = Field(10, gt=0, description="Per export attempt to the collector.")
    # Security. Only read here; `otel_perf.analyzer.auth` reads the files and checks the combination
    # at start, where a problem stops the analyzer (a fallback to "no token" would open the door).
    auth_token_file: str | None = Field(
        None,
        description="File holding the bearer token every request must carry (gRPC metadata "
        "`authorization: Bearer <token>`, HTTP header `Authorization`), e.g. a mounted secret; read at "
        "start. Several tokens, one a line, are each accepted (a rotation; the collector sends the "
        "first). Unset (and no …_AUTH_TOKEN): no token needed. /healthz and /readyz stay open for probes.",
    )
    auth_token: SecretStr | None = Field(
        None,
        description="The bearer token itself, when a file is not practical (an environment leaks "
        "more easily: prefer …_AUTH_TOKEN_FILE; not both). Never logged or shown.",
    )
    auth_metrics: bool = Field(
        True,
        description="With a token set, /metrics requires it too (Prometheus: `authorization: "
        "{credentials_file: …}`); false leaves /metrics open to scrapers without credentials.",
    )
    tls_cert_file: str | None = Field(
        None,
        description="PEM certificate (chain) of the analyzer: both receivers then speak TLS only "
        "(gRPC and HTTPS). Needs …_TLS_KEY_FILE.",
    )
    tls_key_file: str | None = Field(None, description="PEM private key (unencrypted) of …_TLS_CERT_FILE.")
    tls_client_ca_file: str | None = Field(
        None,
        description="PEM CA bundle: the gRPC receiver then also requires a client certificate it "
        "signed (mutual TLS: the collector's `tls.cert_file`/`key_file`). HTTPS does not, so that "
        "probes still reach /healthz and /readyz: protect it with the token.",
    )
    max_ack_wait_s: float = Field(
        5,
        ge=0,
        description="A trace request is acknowledged once it is back in the collector, so a killed "
        "analyzer loses nothing the collector's sending queue won't send again; after this long (or "
        "just before the sender's deadline) it is acknowledged anyway and stays queued here. 0: "
        "acknowledge on receipt.",
    )

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
