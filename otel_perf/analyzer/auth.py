"""Who may talk to the analyzer: TLS on both receivers, a bearer token on every request but the
probes', and the warnings a start gets when the door is open.

Built once at start from `AnalyzerSettings`. A token or certificate that can't be used stops the
start with one line naming its variable: falling back to "no token" or plain text, as a bad tuning
value falls back to its default, would silently open what the operator meant to close.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import code_pb2, status_pb2
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.errors import SettingsError

logger = logging.getLogger("otel_perf.analyzer")

# Open whatever the settings say: probes (kubelet, compose, the rig) carry no secret. /healthz says
# only "ok"; /readyz gives its reasons to callers with the token only.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
OTLP_PATHS = frozenset({"/v1/traces", "/v1/metrics"})
_ENV = AnalyzerSettings.env_name
_REFUSED = "a valid bearer token is required (authorization: Bearer <token>)"
_SHORT_TOKEN = 16


class Refusals:
    """Requests refused for want of a valid token: counted for /metrics, logged at most once a
    `interval_s` (a scanner must not flood the log). Never the token presented."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.total = 0
        self._unreported = 0
        self._reported_at = -math.inf
        self._lock = threading.Lock()

    def record(self, transport: str, peer: str, reason: str) -> None:
        with self._lock:
            self.total += 1
            self._unreported += 1
            now = time.monotonic()
            if now - self._reported_at < self.interval_s:
                return
            count, self._unreported, self._reported_at = self._unreported, 0, now
        logger.warning(
            "otel-perf analyzer: refused %d request(s) without a valid bearer token (latest: %s from %s, %s)",
            count,
            transport,
            peer or "an unknown peer",
            reason,
        )


@dataclass(frozen=True)
class TransportSecurity:
    """The analyzer's TLS material and token, read and checked (`from_settings`)."""

    token_digests: tuple[bytes, ...] = field(default=(), repr=False)  # sha256 of each accepted token
    shortest_token: int = 0
    cert_file: str | None = None
    key_file: str | None = None
    certificate_chain: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)
    client_ca: bytes | None = field(default=None, repr=False)
    protect_metrics: bool = True
    refusals: Refusals = field(default_factory=Refusals, compare=False, repr=False)

    @classmethod
    def from_settings(cls, config: AnalyzerSettings) -> TransportSecurity:
        """Read the token and the TLS files. Raises `SettingsError` (one line, naming the variable)
        for a file that can't be read or used, and for a combination that makes no sense."""
        tokens = _tokens(config)
        cert, key, client_ca = config.tls_cert_file or None, config.tls_key_file or None, None
        if bool(cert) != bool(key):
            present, missing = (
                ("TLS_CERT_FILE", "TLS_KEY_FILE") if cert else ("TLS_KEY_FILE", "TLS_CERT_FILE")
            )
            raise SettingsError(
                f"{_ENV(present.lower())} is set but {_ENV(missing.lower())} is not: TLS needs both the "
                "certificate and its private key"
            )
        if config.tls_client_ca_file and not cert:
            raise SettingsError(
                f"{_ENV('tls_client_ca_file')} needs {_ENV('tls_cert_file')} and {_ENV('tls_key_file')}: "
                "client certificates are only asked for over TLS"
            )
        chain = private_key = None
        if cert and key:
            chain, private_key = _read(cert, "tls_cert_file"), _read(key, "tls_key_file")
            _check_pair(cert, key)
        if config.tls_client_ca_file:
            client_ca = _read(config.tls_client_ca_file, "tls_client_ca_file")
            _check_ca(config.tls_client_ca_file)
        return cls(
            token_digests=tuple(hashlib.sha256(token).digest() for token in tokens),
            shortest_token=min((len(token) for token in tokens), default=0),
            cert_file=cert,
            key_file=key,
            certificate_chain=chain,
            private_key=private_key,
            client_ca=client_ca,
            protect_metrics=config.auth_metrics,
        )

    @property
    def tls(self) -> bool:
        return self.certificate_chain is not None

    @property
    def requires_token(self) -> bool:
        return bool(self.token_digests)

    # --- the check ------------------------------------------------------------------------------

    def refusal(self, authorization: str | None) -> str | None:
        """Why `authorization` (a header's value) is refused; None when it is accepted (always,
        without a token). Constant time in the token: digests are compared, not the strings."""
        if not self.token_digests:
            return None
        if not authorization:
            return "no authorization header"
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "not a bearer token"
        digest = hashlib.sha256(presented.strip().encode("utf-8", "surrogateescape")).digest()
        accepted = False
        for expected in self.token_digests:  # each compared: no early exit to time
            accepted |= hmac.compare_digest(digest, expected)
        return None if accepted else "wrong token"

    def is_open(self, path: str) -> bool:
        """An HTTP path served without the token."""
        return path in PROBE_PATHS or (path == "/metrics" and not self.protect_metrics)

    # --- gRPC -----------------------------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for the gRPC port (client certificates required with a client CA)."""
        if self.certificate_chain is None or self.private_key is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def grpc_interceptors(self) -> list[grpc.ServerInterceptor]:
        return [_TokenInterceptor(self)] if self.requires_token else []

    # --- HTTP -----------------------------------------------------------------------------------

    def uvicorn_options(self, grace_s: float) -> dict[str, Any]:
        """HTTPS for uvicorn. No client certificates there: probes must reach /healthz.

        With TLS, the stop waits at most `grace_s` for connections: closing one waits for the
        client's close_notify (up to asyncio's 30 s), and an idle keep-alive client that never
        reads would otherwise hold the stop, and the drain after it, until the process is killed."""
        if not self.tls:
            return {}
        return {
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
            "timeout_graceful_shutdown": math.ceil(grace_s),
        }

    def http_middleware(self) -> list[Middleware]:
        """For `Starlette(middleware=…)`: the token check, before routing (unknown paths included)."""
        return [Middleware(_RequireToken, security=self)] if self.requires_token else []

    # --- start-up -------------------------------------------------------------------------------

    def warnings(self, endpoints: Mapping[str, str]) -> list[str]:
        """What to warn about at start, given {what: host:port} of the receivers."""
        exposed = [f"{name} on {address}" for name, address in endpoints.items() if not _loopback(address)]
        problems = []
        if exposed and not self.requires_token:
            problems.append(
                f"otel-perf analyzer: {' and '.join(exposed)} accept(s) requests from other hosts without "
                f"a token (anyone who reaches them can send telemetry and read /metrics): set "
                f"{_ENV('auth_token_file')} and {_ENV('tls_cert_file')} (deploy/README.md, "
                "'Securing the analyzer')"
            )
        elif exposed and not self.tls:
            problems.append(
                f"otel-perf analyzer: the bearer token travels in clear text to {' and '.join(exposed)}: "
                f"set {_ENV('tls_cert_file')} and {_ENV('tls_key_file')}"
            )
        if self.requires_token and self.shortest_token < _SHORT_TOKEN:
            problems.append(
                f"otel-perf analyzer: the bearer token is shorter than {_SHORT_TOKEN} characters: use a "
                "random one, e.g. `openssl rand -hex 32`"
            )
        return problems


class _TokenInterceptor(grpc.ServerInterceptor):
    """Every RPC, known method or not, needs the token: UNAUTHENTICATED otherwise."""

    def __init__(self, security: TransportSecurity) -> None:
        self.security = security

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        metadata = getattr(handler_call_details, "invocation_metadata", None) or ()
        authorization = next((value for key, value in metadata if key == "authorization"), None)
        reason = self.security.refusal(authorization if isinstance(authorization, str) else None)
        if reason is None:
            return continuation(handler_call_details)
        refusals = self.security.refusals

        def deny(_: bytes, context: grpc.ServicerContext) -> bytes:
            refusals.record("gRPC", context.peer(), reason)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSED)  # raises

        return grpc.unary_unary_rpc_method_handler(deny)


class _RequireToken:
    """ASGI middleware: 401 with `WWW-Authenticate: Bearer` before the body is read, for every path
    but the probes' (and /metrics when left open). OTLP paths get a google.rpc.Status body."""

    def __init__(self, app: ASGIApp, security: TransportSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.security.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        reason = self.security.refusal(headers.get("authorization"))
        if reason is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        self.security.refusals.record("HTTP", f"{client[0]}:{client[1]}" if client else "", reason)
        challenge = 'Bearer realm="otel-perf-analyzer"'
        if reason == "wrong token":
            challenge += ', error="invalid_token"'
        response = _refusal(scope["path"], headers.get("content-type", ""))
        response.headers["WWW-Authenticate"] = challenge
        await response(scope, receive, send)


def _refusal(path: str, content_type: str) -> Response:
    if path not in OTLP_PATHS:
        return PlainTextResponse(_REFUSED + "\n", status_code=401)
    if content_type.split(";")[0].strip().lower() == "application/json":
        return JSONResponse({"code": code_pb2.UNAUTHENTICATED, "message": _REFUSED}, status_code=401)
    status = status_pb2.Status(code=code_pb2.UNAUTHENTICATED, message=_REFUSED)
    return Response(status.SerializeToString(), status_code=401, media_type="application/x-protobuf")


def _tokens(config: AnalyzerSettings) -> list[bytes]:
    """The accepted tokens. A file may hold several, one a line, as the collector's bearertokenauth
    reads it (it sends the first): a new token can be accepted before the collector sends it."""
    literal = config.auth_token.get_secret_value() if config.auth_token is not None else ""
    if literal and config.auth_token_file:
        raise SettingsError(
            f"{_ENV('auth_token')} and {_ENV('auth_token_file')} are both set: set one (the file, preferably)"
        )
    if config.auth_token_file:
        variable, content = _ENV("auth_token_file"), _read(config.auth_token_file, "auth_token_file")
        tokens = [line.strip() for line in content.decode("utf-8", "replace").splitlines() if line.strip()]
        if not tokens:
            raise SettingsError(f"{variable}={config.auth_token_file!r} is empty: write the token into it")
    elif literal:
        variable, tokens = _ENV("auth_token"), [literal.strip()]
    else:
        return []
    for token in tokens:
        if not all(33 <= ord(character) <= 126 for character in token):
            # Never echo it: it is a secret, even when malformed.
            raise SettingsError(
                f"a token in {variable} is not printable ASCII without spaces (it travels in an HTTP "
                "header; one token a line): use e.g. the output of `openssl rand -hex 32`"
            )
    return [token.encode("ascii") for token in tokens]


def _read(path: str, field_name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"{_ENV(field_name)}={path!r} can't be read: {error.strerror or error}") from None


def _check_pair(cert: str, key: str) -> None:
    """Load them as the HTTPS server will: a bad PEM or a key of another certificate is named here,
    not a traceback from uvicorn or a gRPC port that fails to open."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback that gives none: an encrypted key fails instead of prompting on a tty.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, ValueError) as error:
        raise SettingsError(
            f"{_ENV('tls_cert_file')}={cert!r} and {_ENV('tls_key_file')}={key!r} can't be used: "
            f"{getattr(error, 'reason', None) or error} (PEM certificate chain and its unencrypted "
            "private key expected)"
        ) from None


def _check_ca(path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as error:
        raise SettingsError(
            f"{_ENV('tls_client_ca_file')}={path!r} can't be used: {getattr(error, 'reason', None) or error} "
            "(PEM CA certificates expected)"
        ) from None


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or 0.0.0.0 / :: — not loopback either)
