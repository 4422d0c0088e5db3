"""OTEL_PERF_* settings: all documented; a bad value never stops the app (default + one log line),
unless strict, where it is an error naming the variable."""

from __future__ import annotations

import enum
import logging
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from otel_perf.errors import SettingsError
from otel_perf.processors.findings import Severity
from otel_perf.settings import Settings, documented_variables


def _locate(variable: str) -> tuple[str, str, Any]:
    for section_name, section in Settings.sections():
        for field, info in section.model_fields.items():
            if section.env_name(field) == variable:
                return section_name, field, info
    raise KeyError(variable)


def _bad_value(info: Any) -> str | None:
    """A value of the wrong type for the field; None where any string is acceptable."""
    annotation = info.annotation
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is typing.Union or type(annotation).__name__ == "UnionType":
        annotation = args[0] if len(args) == 1 else annotation
    if annotation is bool:
        return "maybe"
    if annotation in (int, float):
        return "lots"
    if typing.get_origin(annotation) is typing.Literal:
        return "nowhere"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "urgent"
    if typing.get_origin(annotation) is dict:
        return "{not json"
    if annotation in (str, Path, SecretStr):
        return None
    raise AssertionError(f"no bad value known for {annotation!r}: extend the test")


VARIABLES = [row[0] for row in documented_variables()]
TYPED_VARIABLES = [name for name in VARIABLES if _bad_value(_locate(name)[2]) is not None]


def test_every_variable_has_a_description() -> None:
    missing = [name for name, _, description in documented_variables() if not description.strip()]
    assert not missing, f"OTEL_PERF_* variables without a description: {missing}"


def test_every_variable_is_otel_perf_and_unique() -> None:
    assert all(name.startswith("OTEL_PERF_") for name in VARIABLES)
    assert len(VARIABLES) == len(set(VARIABLES))
    for expected in (
        "OTEL_PERF_ENABLED",
        "OTEL_PERF_ALERTS_FILE",
        "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS",
        "OTEL_PERF_SLOW_SPAN_OVERRIDES",
        "OTEL_PERF_ALERTS_MIN_SEVERITY",
    ):
        assert expected in VARIABLES


@pytest.mark.parametrize("variable", TYPED_VARIABLES)
def test_bad_value_falls_back_to_default_with_one_log_line(
    variable: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    section_name, field, info = _locate(variable)
    monkeypatch.setenv(variable, _bad_value(info))
    with caplog.at_level(logging.WARNING):
        settings = Settings.from_env()
    assert getattr(settings.section(section_name), field) == info.get_default(call_default_factory=True)
    naming = [record for record in caplog.records if variable in record.getMessage()]
    assert len(naming) == 1, [record.getMessage() for record in caplog.records]
    assert len(caplog.records) == 1


@pytest.mark.parametrize("variable", TYPED_VARIABLES)
def test_bad_value_is_an_error_naming_the_variable_when_strict(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, _bad_value(_locate(variable)[2]))
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(strict=True)


@pytest.mark.parametrize(
    ("variable", "value", "section", "field", "default"),
    [
        ("OTEL_PERF_N_PLUS_ONE_MIN_REPEATS", "1", "n_plus_one", "min_repeats", 5),  # below ge=2
        ("OTEL_PERF_N_PLUS_ONE_MIN_SHARE", "1.5", "n_plus_one", "min_share", 0.1),
        ("OTEL_PERF_SLOW_SPAN_DB_MS", "0", "slow_span", "db_ms", 100),
        ("OTEL_PERF_SLOW_SPAN_OVERRIDES", '{"path:/x": 10}', "slow_span", "overrides", {}),
        ("OTEL_PERF_SLOW_SPAN_OVERRIDES", '{"route:/x": -1}', "slow_span", "overrides", {}),
        ("OTEL_PERF_ALERTS_MAX_PER_HOUR", "0", "router", "max_per_hour", 60),
        ("OTEL_PERF_MAX_TRACES", "-3", "processor", "max_traces", 1000),
    ],
)
def test_out_of_range_values_fall_back(
    variable: str,
    value: str,
    section: str,
    field: str,
    default: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(variable, value)
    with caplog.at_level(logging.WARNING):
        settings = Settings.from_env()
    assert getattr(settings.section(section), field) == default
    assert [variable in record.getMessage() for record in caplog.records] == [True]
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(strict=True)


def test_good_values_are_read_and_a_bad_neighbour_does_not_spoil_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_MIN_REPEATS", "7")
    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_HIGH_MS", "not-a-number")
    monkeypatch.setenv("OTEL_PERF_ALERTS_MIN_SEVERITY", "HIGH")
    monkeypatch.setenv("OTEL_PERF_ENABLED", "false")
    monkeypatch.setenv("OTEL_PERF_SLOW_SPAN_OVERRIDES", '{"route:/analytics/*": 2000}')
    with caplog.at_level(logging.WARNING):
        settings = Settings.from_env()
    assert settings.detectors["n_plus_one"].min_repeats == 7
    assert settings.detectors["n_plus_one"].high_ms == 250
    assert settings.router.min_severity == Severity.HIGH
    assert settings.processor.enabled is False
    assert settings.processor.analyses_in_process is False
    assert settings.detectors["slow_span"].overrides == {"route:/analytics/*": 2000}
    assert len(caplog.records) == 1 and "OTEL_PERF_N_PLUS_ONE_HIGH_MS" in caplog.records[0].getMessage()


def test_defaults_without_environment() -> None:
    settings = Settings.from_env(strict=True)
    assert settings.processor.enabled is True
    assert settings.detectors["n_plus_one"].min_repeats == 5
    assert settings.detectors["slow_span"].db_ms == 100
    assert settings.router.min_severity == Severity.LOW
    assert settings.sinks.file is None


def test_sections_passed_in_replace_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_perf.processors.detectors import NPlusOneSettings

    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_MIN_REPEATS", "9")
    settings = Settings.from_env(n_plus_one=NPlusOneSettings(min_repeats=3))
    assert settings.detectors["n_plus_one"].min_repeats == 3


def test_an_unknown_otel_perf_variable_is_named_with_the_closest_setting(caplog) -> None:
    from otel_perf.settings import warn_about_unknown_variables

    package_logger = logging.getLogger("otel_perf")  # may not propagate (otel-perf's own handler)
    package_logger.addHandler(caplog.handler)
    try:
        _warn_for_a_mixed_environment(warn_about_unknown_variables)
    finally:
        package_logger.removeHandler(caplog.handler)
    lines = sorted({record.getMessage() for record in caplog.records})  # (once more if it propagates)
    assert len(lines) == 2, lines
    assert "OTEL_PERF_ALERTS_FIEL is not a setting" in lines[0] and "OTEL_PERF_ALERTS_FILE?" in lines[0]
    assert "OTEL_PERF_NOTHING_LIKE_IT" in lines[1] and "did you mean" not in lines[1]


def _warn_for_a_mixed_environment(warn: Any) -> None:
    warn(
        {
            "OTEL_PERF_ALERTS_FIEL": "alerts.jsonl",  # a typo
            "OTEL_PERF_NOTHING_LIKE_IT": "1",
            "OTEL_PERF_ENABLED": "true",  # a setting
            "OTEL_PERF_JAEGER_BIN": "/opt/jaeger",  # read by the toolchain
            "OTEL_PERF_GROUPBYTRACE_WAIT": "1s",  # read by the collector configs
            "OTEL_SERVICE_NAME": "shop",
        }
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OTEL_PERF_ANALYZER_HTTP_ENDPOINT", "nonsense", "host:port with a port from 1 to 65535"),
        ("OTEL_PERF_ANALYZER_GRPC_ENDPOINT", "127.0.0.1:99999", "host:port with a port from 1 to 65535"),
        ("OTEL_PERF_ANALYZER_EXPORT_ENDPOINT", "http://collector:4327", "not a URL"),
    ],
)
def test_a_bad_analyzer_endpoint_is_one_line_naming_it(
    variable: str, value: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to be a traceback at start (HTTP), or a silently random port (gRPC)."""
    from otel_perf.analyzer.settings import AnalyzerSettings
    from otel_perf.processors.errors import SettingsError

    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"{variable}=.*{expected}"):
        AnalyzerSettings.load(strict=True)
    monkeypatch.setenv(variable, "[::1]:14318")
    assert AnalyzerSettings.load(strict=True)


# --- the analyzer's token and TLS files (otel_perf.analyzer.auth) -------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"tls_key_file": "{pem}"},
            "OTEL_PERF_ANALYZER_TLS_KEY_FILE is set but OTEL_PERF_ANALYZER_TLS_CERT_FILE is not",
        ),
        (
            {"tls_client_ca_file": "{pem}"},
            "OTEL_PERF_ANALYZER_TLS_CLIENT_CA_FILE needs OTEL_PERF_ANALYZER_TLS_CERT_FILE",
        ),
        (
            {"tls_cert_file": "{pem}", "tls_key_file": "{pem}"},
            "OTEL_PERF_ANALYZER_TLS_CERT_FILE='{pem}' and OTEL_PERF_ANALYZER_TLS_KEY_FILE='{pem}' "
            "can't be used",
        ),
        ({"auth_token_file": "{missing}"}, "OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE='{missing}' can't be read"),
        (
            {"auth_token_file": "{directory}"},
            "OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE='{directory}' can't be read",
        ),
        ({"auth_token_file": "{empty}"}, "OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE='{empty}' is empty"),
        (
            {"auth_token_file": "{token}", "auth_token": "0123456789abcdef0123"},
            "OTEL_PERF_ANALYZER_AUTH_TOKEN and OTEL_PERF_ANALYZER_AUTH_TOKEN_FILE are both set",
        ),
    ],
    ids=["key-without-cert", "client-ca-without-tls", "not-pem", "missing", "directory", "empty", "both"],
)
def test_analyzer_security_files_that_cant_work_are_one_line_naming_the_variable(
    values: dict[str, str], expected: str, tmp_path: Path
) -> None:
    """Checked at the analyzer's start (a fallback to no token or plain text would open the door)."""
    from otel_perf.analyzer.auth import TransportSecurity
    from otel_perf.analyzer.settings import AnalyzerSettings

    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
    (tmp_path / "empty").write_text(" \n")
    (tmp_path / "token").write_text("0123456789abcdef0123\n")
    paths = {
        "pem": tmp_path / "garbage.pem",
        "missing": tmp_path / "nowhere",
        "directory": tmp_path,
        "empty": tmp_path / "empty",
        "token": tmp_path / "token",
    }
    config = AnalyzerSettings(**{key: value.format(**paths) for key, value in values.items()})
    with pytest.raises(SettingsError) as error:
        TransportSecurity.from_settings(config)
    assert expected.format(**paths) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("where", ["env", "file"])
def test_a_malformed_token_is_refused_without_being_echoed(where: str, tmp_path: Path) -> None:
    from otel_perf.analyzer.auth import TransportSecurity
    from otel_perf.analyzer.settings import AnalyzerSettings

    secret = "two words-SECRETPART"
    (tmp_path / "token").write_text(secret)
    config = (
        AnalyzerSettings(auth_token=SecretStr(secret))
        if where == "env"
        else AnalyzerSettings(auth_token_file=str(tmp_path / "token"))
    )
    with pytest.raises(SettingsError, match="not printable ASCII without spaces") as error:
        TransportSecurity.from_settings(config)
    assert "SECRETPART" not in str(error.value)


def test_the_token_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from otel_perf.analyzer.auth import TransportSecurity
    from otel_perf.analyzer.settings import AnalyzerSettings
    from otel_perf.cli import main
    from otel_perf.settings import markdown_table

    secret = "s3cr3t-0123456789abcdef"
    monkeypatch.setenv("OTEL_PERF_ANALYZER_AUTH_TOKEN", secret)
    config = AnalyzerSettings.load(strict=True)
    assert config.auth_token is not None and config.auth_token.get_secret_value() == secret
    assert secret not in repr(config) and secret not in str(TransportSecurity.from_settings(config))
    assert "| `OTEL_PERF_ANALYZER_AUTH_TOKEN` | unset |" in markdown_table()
    main(["settings"])
    shown = capsys.readouterr()
    assert "OTEL_PERF_ANALYZER_AUTH_TOKEN" in shown.out and secret not in shown.out + shown.err


@pytest.mark.parametrize(
    ("authorization", "refusal"),
    [
        ("Bearer 0123456789abcdef0123", None),
        ("bearer 0123456789abcdef0123", None),  # the scheme is case-insensitive (RFC 7235)
        (" Bearer  0123456789abcdef0123 ", None),
        (None, "no authorization header"),
        ("", "no authorization header"),
        ("0123456789abcdef0123", "not a bearer token"),
        ("Basic 0123456789abcdef0123", "not a bearer token"),
        ("Bearer", "not a bearer token"),
        ("Bearer 0123456789abcdef012", "wrong token"),
        ("Bearer 0123456789abcdef01234", "wrong token"),
        ("Bearer 0123456789ABCDEF0123", "wrong token"),
    ],
)
def test_the_bearer_token_check(authorization: str | None, refusal: str | None) -> None:
    from otel_perf.analyzer.auth import TransportSecurity
    from otel_perf.analyzer.settings import AnalyzerSettings

    security = TransportSecurity.from_settings(AnalyzerSettings(auth_token=SecretStr("0123456789abcdef0123")))
    assert security.refusal(authorization) == refusal
    assert TransportSecurity.from_settings(AnalyzerSettings()).refusal(authorization) is None  # no token


def test_start_warnings_for_an_analyzer_other_hosts_can_reach() -> None:
    import hashlib

    from otel_perf.analyzer.auth import TransportSecurity

    def warnings(security: TransportSecurity, http: str, grpc: str = "127.0.0.1:14317") -> list[str]:
        return security.warnings({"OTLP/gRPC": grpc, "OTLP/HTTP": http})

    open_door = TransportSecurity()
    token = {"token_digests": (hashlib.sha256(b"t" * 32).digest(),), "shortest_token": 32}
    assert warnings(open_door, "127.0.0.1:14318") == []
    assert warnings(open_door, "[::1]:14318", "localhost:14317") == []
    [line] = warnings(open_door, "0.0.0.0:14318")
    assert "OTLP/HTTP on 0.0.0.0:14318" in line and "without a token" in line and "OTLP/gRPC" not in line
    [line] = warnings(open_door, "0.0.0.0:14318", "analyzer.internal:14317")
    assert "OTLP/gRPC on analyzer.internal:14317 and OTLP/HTTP on 0.0.0.0:14318" in line
    [line] = warnings(TransportSecurity(**token), "[::]:14318")
    assert "clear text" in line and "OTEL_PERF_ANALYZER_TLS_CERT_FILE" in line
    assert warnings(TransportSecurity(**token, certificate_chain=b"PEM"), "0.0.0.0:14318") == []
    [line] = warnings(TransportSecurity(**{**token, "shortest_token": 8}), "127.0.0.1:14318")
    assert "shorter than 16 characters" in line


def test_refusals_are_counted_each_and_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    from otel_perf.analyzer.auth import Refusals

    package_logger = logging.getLogger("otel_perf")  # may not propagate (otel-perf's own handler)
    package_logger.addHandler(caplog.handler)
    try:
        refusals = Refusals()
        for _ in range(3):
            refusals.record("HTTP", "127.0.0.1:5555", "wrong token")
    finally:
        package_logger.removeHandler(caplog.handler)
    assert refusals.total == 3
    lines = sorted({record.getMessage() for record in caplog.records})
    assert lines == [
        "otel-perf analyzer: refused 1 request(s) without a valid bearer token "
        "(latest: HTTP from 127.0.0.1:5555, wrong token)"
    ]


def test_a_token_file_may_hold_several_tokens_for_a_rotation(tmp_path: Path) -> None:
    """One a line, as the collector's bearertokenauth reads the same file (it sends the first): the
    analyzer accepts each, so a new token is accepted before any collector sends it."""
    from otel_perf.analyzer.auth import TransportSecurity
    from otel_perf.analyzer.settings import AnalyzerSettings

    (tmp_path / "tokens").write_text("old-0123456789abcdef\n\n  new-0123456789abcdef  \n")
    security = TransportSecurity.from_settings(AnalyzerSettings(auth_token_file=str(tmp_path / "tokens")))
    assert security.refusal("Bearer old-0123456789abcdef") is None
    assert security.refusal("Bearer new-0123456789abcdef") is None
    assert security.refusal("Bearer old-0123456789abcdef\nnew-0123456789abcdef") == "wrong token"
    assert security.refusal("Bearer other-0123456789abcdef") == "wrong token"
