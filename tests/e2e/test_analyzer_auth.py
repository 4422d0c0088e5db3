"""The analyzer behind TLS and a bearer token, as deploy/README.md tells to set it up: the real
collector with collector/gateway-analyzer-auth.yaml sends through, a collector without the token
and clients without it (or with a wrong one, or in plain text) are refused, probes stay open."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from google.rpc import code_pb2, status_pb2

from otel_perf.stack.rig import Stack, StackPorts
from tests.e2e.test_analyzer_input import PROTOBUF, TRACE_EXPORT, _request
from tests.support.apps import free_port, wait_until
from tests.support.stack import FAST_COLLECTOR, RunningStack

COLLECTOR_DIR = Path(__file__).resolve().parents[2] / "collector"
OVERLAY = "gateway-analyzer-auth.yaml"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


@dataclass(frozen=True)
class Pki:
    """A CA, the analyzer's certificate (127.0.0.1) and a client certificate it signed, and a token."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    token_file: Path
    token: str

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def grpc_credentials(self, client_certificate: bool = True) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client_key.read_bytes() if client_certificate else None,
            certificate_chain=self.client_cert.read_bytes() if client_certificate else None,
        )

    def bearer(self, token: str | None = None) -> str:
        return f"Bearer {token or self.token}"


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    assert binary, "the openssl command is needed to make the test certificates"
    result = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(args)}: {result.stderr}"


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=otel-perf test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    for name, usage, alt_names in (
        ("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
        ("client", "clientAuth", "DNS:otel-perf-collector"),
    ):
        (directory / f"{name}.ext").write_text(
            f"subjectAltName={alt_names}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        )
        _openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=directory,
        )  # fmt: skip
    token = secrets.token_hex(32)
    token_file = directory / "analyzer-token"
    token_file.write_text(token + "\n")  # as `openssl rand -hex 32 > file` writes it
    return Pki(
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
        directory / "client.crt",
        directory / "client.key",
        token_file,
        token,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The stack with the analyzer on TLS (client certificates required on gRPC) and a token, and the
    collector running gateway.yaml merged with the shipped overlay: what deploy/README.md describes."""
    stack = Stack(
        tmp_path_factory.mktemp("secure-stack"),
        StackPorts.free(),
        analyzer_env={
            "OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE": str(pki.token_file),
            "OTEL_PERF_ANALYZER_TLS_CERT_FILE": str(pki.server_cert),
            "OTEL_PERF_ANALYZER_TLS_KEY_FILE": str(pki.server_key),
            "OTEL_PERF_ANALYZER_TLS_CLIENT_CA_FILE": str(pki.ca),
        },
        collector_env={
            **FAST_COLLECTOR,
            "OTEL_PERF_COLLECTOR_ANALYZER_TOKEN_FILE": str(pki.token_file),
            "OTEL_PERF_COLLECTOR_ANALYZER_CA_FILE": str(pki.ca),
            "OTEL_PERF_COLLECTOR_ANALYZER_CERT_FILE": str(pki.client_cert),
            "OTEL_PERF_COLLECTOR_ANALYZER_KEY_FILE": str(pki.client_key),
        },
        collector_overlays=(OVERLAY,),
    )
    stack.build()
    stack.up()
    yield RunningStack(stack)
    stack.down()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:_total)? ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not in the analyzer's metrics"
    return float(match.group(1))


def _https_metrics(stack: RunningStack, pki: Pki) -> str:
    url = f"https://127.0.0.1:{stack.ports.analyzer(0)[1]}/metrics"
    response = httpx.get(url, headers={"Authorization": pki.bearer()}, verify=pki.client_context(), timeout=5)
    assert response.status_code == 200, response.text
    return response.text


def _send_to_collector(stack: RunningStack, service: str, trace_byte: int) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{stack.ports.otlp_http}/v1/traces",
        content=_request(service, trace_byte),
        headers=PROTOBUF,
        timeout=10,
    )
    assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------ the collector's path


def test_with_the_token_on_both_sides_traces_go_through_the_analyzer_to_jaeger(
    secure: RunningStack, pki: Pki
) -> None:
    _send_to_collector(secure, "auth-through", 0x41)
    traces = wait_until(lambda: secure.jaeger_traces("auth-through"), timeout=30, what="the trace in Jaeger")
    assert traces[0]["traceID"] == "41" * 16
    metrics = _https_metrics(secure, pki)
    assert _metric(metrics, "otel_perf_analyzer_spans_received") >= 1
    log = (secure.stack.state_dir / "analyzer-1.log").read_text()
    assert "TLS, bearer token required" in log
    assert pki.token not in log and "without a token" not in log


def test_the_overlay_keeps_every_extension_of_gateway_yaml() -> None:
    """A list in an overlay replaces the base file's: an extension added to gateway.yaml (and used by
    it, like file_storage) must be added to the overlay's list too, or the secured collector loses it."""
    base = yaml.safe_load((COLLECTOR_DIR / "gateway.yaml").read_text())["service"]["extensions"]
    overlay = yaml.safe_load((COLLECTOR_DIR / OVERLAY).read_text())
    assert overlay["service"]["extensions"] == [*base, "bearertokenauth/analyzer"]
    exporters = yaml.safe_load((COLLECTOR_DIR / "gateway.yaml").read_text())["exporters"]
    assert set(overlay["exporters"]) == {
        name for name in exporters if name.startswith("loadbalancing/analyzer")
    }


def test_the_overlay_validates_and_needs_its_token_file(pki: Pki) -> None:
    from otel_perf.stack.toolchain import ensure_binary

    argv = [str(ensure_binary("otelcol")), "validate"]
    argv += ["--config", str(COLLECTOR_DIR / "gateway.yaml"), "--config", str(COLLECTOR_DIR / OVERLAY)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    with_token = {**env, "OTEL_PERF_COLLECTOR_ANALYZER_TOKEN_FILE": str(pki.token_file)}
    result = subprocess.run(argv, env=with_token, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no bearer token provided" in result.stderr


def test_a_collector_without_the_token_is_refused_and_nothing_is_analysed(
    fresh_stack: Callable[..., RunningStack], pki: Pki
) -> None:
    """The analyzer has a token, the collector runs plain gateway.yaml: every request is refused,
    counted and logged (without the token), and the traces never reach the analysis or Jaeger."""
    stack = fresh_stack(
        analyzer_env={
            "OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE": str(pki.token_file),
            "OTEL_PERF_ANALYZER_AUTH_METRICS": "false",  # /metrics left open: read without the token
        }
    )
    _send_to_collector(stack, "auth-refused", 0x42)
    wait_until(
        lambda: stack.analyzer_metric(0, "otel_perf_analyzer_rejected_unauthenticated") >= 1,
        timeout=30,
        what="the collector's request refused",
    )
    assert stack.analyzer_metric(0, "otel_perf_analyzer_spans_received") == 0
    assert stack.analyzer_metric(0, "otel_perf_analyzer_requests") == 0
    log = (stack.stack.state_dir / "analyzer-1.log").read_text()
    refused = [line for line in log.splitlines() if "without a valid bearer token" in line]
    assert refused and "gRPC from ipv4:127.0.0.1:" in refused[0] and "no authorization header" in refused[0]
    assert pki.token not in log
    # Plain text on loopback with the token is fine (the warning is for other hosts only)...
    url = f"http://127.0.0.1:{stack.ports.analyzer(0)[1]}/v1/traces"
    ok = httpx.post(
        url, content=_request("auth-direct", 0x43), headers={**PROTOBUF, "Authorization": pki.bearer()}
    )
    assert ok.status_code == 200
    assert "clear text" not in log and "without a token" not in log
    # ... and what the analyzer accepted reaches Jaeger, while the collector's refused trace never does.
    wait_until(lambda: stack.jaeger_trace("43" * 16), timeout=30, what="the directly sent trace in Jaeger")
    assert stack.jaeger_trace("42" * 16) is None


# ------------------------------------------------------------------------------ direct clients, gRPC


def test_grpc_needs_tls_a_client_certificate_and_the_token(secure: RunningStack, pki: Pki) -> None:
    target = f"127.0.0.1:{secure.ports.analyzer(0)[0]}"
    refused_before = _metric(_https_metrics(secure, pki), "otel_perf_analyzer_rejected_unauthenticated")
    with grpc.secure_channel(target, pki.grpc_credentials()) as channel:
        export = channel.unary_unary(TRACE_EXPORT)
        for metadata in (
            None,
            [("authorization", pki.bearer("wrong"))],
            [("authorization", "Basic Zm9vOmJhcg==")],
        ):
            with pytest.raises(grpc.RpcError) as error:
                export(_request("auth-grpc", 0x44), metadata=metadata, timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert pki.token not in (error.value.details() or "")
        # No method list for the unauthenticated: an unknown method is refused the same way.
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary("/no.such.Service/Method")(b"", timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (
            export(_request("auth-grpc", 0x44), metadata=[("authorization", pki.bearer())], timeout=5) == b""
        )
        metrics = channel.unary_unary(METRICS_EXPORT)
        assert metrics(b"", metadata=[("authorization", pki.bearer())], timeout=5) == b""
    refused = _metric(_https_metrics(secure, pki), "otel_perf_analyzer_rejected_unauthenticated")
    assert refused - refused_before == 4
    wait_until(lambda: secure.jaeger_trace("44" * 16), timeout=30, what="the accepted gRPC trace in Jaeger")
    # Plain text, or TLS without a client certificate: no connection at all, token or not.
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(TRACE_EXPORT)(b"", metadata=[("authorization", pki.bearer())], timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(target, pki.grpc_credentials(client_certificate=False)) as channel:
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(TRACE_EXPORT)(b"", metadata=[("authorization", pki.bearer())], timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------------------ direct clients, HTTP


def test_https_needs_the_token_except_for_the_probes(
    secure: RunningStack, pki: Pki, request: pytest.FixtureRequest
) -> None:
    base = f"https://127.0.0.1:{secure.ports.analyzer(0)[1]}"
    client = httpx.Client(verify=pki.client_context(), timeout=5)
    request.addfinalizer(client.close)
    body = _request("auth-http", 0x45)
    missing = client.post(f"{base}/v1/traces", content=body, headers=PROTOBUF)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer ")
    assert status_pb2.Status.FromString(missing.content).code == code_pb2.UNAUTHENTICATED
    wrong = client.post(
        f"{base}/v1/traces", json={"resourceSpans": []}, headers={"Authorization": pki.bearer("wrong")}
    )
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert wrong.json()["code"] == code_pb2.UNAUTHENTICATED
    assert client.post(f"{base}/v1/metrics", content=b"", headers=PROTOBUF).status_code == 401
    assert client.get(f"{base}/v1/logs").status_code == 401  # unknown paths too: nothing to map out
    right = client.post(
        f"{base}/v1/traces", content=body, headers={**PROTOBUF, "Authorization": pki.bearer()}
    )
    assert right.status_code == 200
    # /metrics is protected by default; the probes are open, /readyz keeps its reasons for the token.
    assert client.get(f"{base}/metrics").status_code == 401
    assert "otel_perf_analyzer_rejected_unauthenticated_total" in _https_metrics(secure, pki)
    assert client.get(f"{base}/healthz").json() == {"status": "ok"}
    assert client.get(f"{base}/readyz").json() == {"status": "ready"}
    assert client.get(f"{base}/readyz", headers={"Authorization": pki.bearer()}).json() == {
        "status": "ready",
        "problems": [],
    }
    # Plain HTTP to the TLS port gets no answer at all.
    with pytest.raises(httpx.TransportError):
        httpx.post(
            f"http://127.0.0.1:{secure.ports.analyzer(0)[1]}/v1/traces",
            content=body,
            headers={**PROTOBUF, "Authorization": pki.bearer()},
            timeout=5,
        )
    wait_until(lambda: secure.jaeger_trace("45" * 16), timeout=30, what="the accepted HTTPS trace in Jaeger")


# ------------------------------------------------------------------------------ starting the analyzer


def _run_analyzer(
    env: dict[str, str],
    log: Path,
    until: Callable[[int], bool] | None = None,
    stop_within_s: float = 15,
) -> int | None:
    """`otel-perf analyzer` with `env` ({http_port} and {grpc_port} filled in): its exit code, or None
    when `until(http_port)` came true while it ran (then it is stopped by SIGTERM, which must not
    take over `stop_within_s`)."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    grpc_port, http_port = free_port(), free_port()
    full_env = {
        **base,
        "OTEL_PERF_ANALYZER_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
        "OTEL_PERF_ANALYZER_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
        "OTEL_PERF_ANALYZER_EXPORT_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTEL_PERF_ALERTS_OUTBOX_PATH": str(log.parent / "outbox.sqlite3"),
        "OTEL_PERF_MONITOR_STATE_PATH": str(log.parent / "monitors.sqlite3"),
        **{key: value.format(http_port=http_port, grpc_port=grpc_port) for key, value in env.items()},
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_perf.cli", "analyzer"],
            env=full_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return process.returncode
            if until is not None and until(http_port):
                return None
            time.sleep(0.1)
        raise AssertionError(f"the analyzer neither stopped nor got there: {log.read_text()}")
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=stop_within_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(
                    f"the analyzer took over {stop_within_s} s to stop: {log.read_text()}"
                ) from None


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (
            {"OTEL_PERF_ANALYZER_TLS_CERT_FILE": "{cert}"},
            "OTEL_PERF_ANALYZER_TLS_CERT_FILE is set but OTEL_PERF_ANALYZER_TLS_KEY_FILE is not",
        ),
        (
            {"OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE": "{missing}"},
            "OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE='{missing}' can't be read: No such file or directory",
        ),
        (
            {"OTEL_PERF_ANALYZER_TLS_CERT_FILE": "{cert}", "OTEL_PERF_ANALYZER_TLS_KEY_FILE": "{other_key}"},
            "OTEL_PERF_ANALYZER_TLS_CERT_FILE='{cert}' and OTEL_PERF_ANALYZER_TLS_KEY_FILE='{other_key}' "
            "can't be used",
        ),
    ],
    ids=["cert-without-key", "unreadable-token-file", "key-of-another-certificate"],
)
def test_a_bad_security_setting_stops_the_start_with_one_line(
    env: dict[str, str], needle: str, pki: Pki, tmp_path: Path
) -> None:
    """Never a fallback to no token or plain text, never a traceback: one line naming the variable."""
    names = {"cert": pki.server_cert, "other_key": pki.client_key, "missing": tmp_path / "no-such-token"}
    env = {key: value.format(**names) for key, value in env.items()}
    log = tmp_path / "analyzer.log"
    assert _run_analyzer(env, log) == 2
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("otel-perf analyzer: ") and needle.format(**names) in lines[0], lines


def test_an_analyzer_open_to_other_hosts_without_a_token_warns_once_at_start(tmp_path: Path) -> None:
    log = tmp_path / "analyzer.log"

    def serving(http_port: int) -> bool:  # HTTP starts last, after the warnings
        try:
            return httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    # The HTTP port on every interface (for a moment, on a free port), gRPC on loopback.
    assert (
        _run_analyzer({"OTEL_PERF_ANALYZER_HTTP_ENDPOINT": "0.0.0.0:{http_port}"}, log, until=serving) is None
    )
    warnings = [line for line in log.read_text().splitlines() if "without a token" in line]
    assert len(warnings) == 1, log.read_text()
    assert "OTLP/HTTP on 0.0.0.0:" in warnings[0] and "OTLP/gRPC" not in warnings[0]
    assert "OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE" in warnings[0]


def test_an_idle_https_client_does_not_hold_up_the_stop(pki: Pki, tmp_path: Path) -> None:
    """Closing a TLS connection waits for the client's close_notify (asyncio: up to 30 s): a keep-alive
    client that never read again held the analyzer's stop, and the drain after it, until killed."""
    clients: list[httpx.Client] = []

    def connected(http_port: int) -> bool:
        client = httpx.Client(verify=pki.client_context(), timeout=1)
        clients.append(client)
        try:
            return client.get(f"https://127.0.0.1:{http_port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    env = {
        "OTEL_PERF_ANALYZER_TLS_CERT_FILE": str(pki.server_cert),
        "OTEL_PERF_ANALYZER_TLS_KEY_FILE": str(pki.server_key),
        "OTEL_PERF_ANALYZER_MAX_ACK_WAIT_S": "0",
    }
    try:
        assert _run_analyzer(env, tmp_path / "analyzer.log", until=connected, stop_within_s=8) is None
    finally:
        for client in clients:
            client.close()
