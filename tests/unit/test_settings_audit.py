"""Every `OTEL_PERF_*` setting, enumerated from the settings classes (a new setting is covered
without touching this file), given values its type or constraints refuse: each is one line naming
that exact variable and what it expects, the default in the app, an error when strict. An empty
value is no value. Scopes' values are held to the same constraints."""

from __future__ import annotations

import enum
import itertools
import logging
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from otel_perf.errors import SettingsError
from otel_perf.processors.config import ScopedSection, Section, magnitude_limit
from otel_perf.settings import Settings, unknown_variables, warn_about_unknown_variables

# Strings any of which the field takes: file paths and secrets, checked where they are used (one
# line there: see tests/test_bad_settings.py), not by the settings.
ANY_STRING_SUFFIXES = ("_PATH", "_FILE", "_TOKEN")


def takes_any_string(variable: str, annotation: Any) -> bool:
    return annotation in (str, Path, SecretStr) and variable.endswith(ANY_STRING_SUFFIXES)


# Strings tried on every other str field: at least one must be refused.
BAD_STRINGS = ("nonsense", "http://", "host:99999")


class _Lines(logging.Handler):
    """otel-perf's log lines, read on its own logger (which may not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged() -> typing.Iterator[list[str]]:
    handler = _Lines()
    package_logger = logging.getLogger("otel_perf")
    level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    yield handler.lines
    package_logger.removeHandler(handler)
    package_logger.setLevel(level)


def _fields() -> list[tuple[str, type[Section], str, FieldInfo]]:
    return [
        (section.env_name(name), section, name, info)
        for _, section in Settings.sections()
        for name, info in section.model_fields.items()
    ]


def _bare(annotation: Any) -> Any:
    """`X | None` → X."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if type(None) in typing.get_args(annotation) and len(args) == 1:
        return args[0]
    return annotation


def _constraint_breakers(field: str, info: FieldInfo, integer: bool) -> list[Any]:
    """Numbers just outside each declared bound, and past the bound of the field's unit."""
    values: list[Any] = []
    step = 1 if integer else 0.5
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            values.append(meta.ge - step)
        if isinstance(meta, annotated_types.Gt):
            values.append(meta.gt)
        if isinstance(meta, annotated_types.Le):
            values.append(meta.le + step)
        if isinstance(meta, annotated_types.Lt):
            values.append(meta.lt)
    limit, _ = magnitude_limit(field)
    values.append(int(limit) * 2 if integer else limit * 2)
    return values


def bad_values(variable: str, field: str, info: FieldInfo) -> list[str]:
    """Values the field must refuse, derived from its type and constraints."""
    annotation = _bare(info.annotation)
    if takes_any_string(variable, annotation):
        return []
    if annotation is bool:
        return ["maybe", "2"]
    if annotation is int:
        return ["lots", "1.5", *(str(value) for value in _constraint_breakers(field, info, True))]
    if annotation is float:
        return [
            "lots",
            "nan",
            "inf",
            "-inf",
            *(repr(value) for value in _constraint_breakers(field, info, False)),
        ]
    if typing.get_origin(annotation) is typing.Literal:
        return ["nowhere"]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ["urgent"]
    if typing.get_origin(annotation) is dict:
        return ["{not json", "[1, 2]", '{"a": "b"}']
    if annotation is SecretStr and variable.endswith(("_URL", "_URLS")):
        return ["ftp://example.com/x", "http://", "example.com/hook"]
    if annotation is str:
        return list(BAD_STRINGS)
    raise AssertionError(f"{variable}: no bad value known for {annotation!r}: extend this test")


CASES = [
    pytest.param(variable, section, field, value, id=f"{variable}={value}")
    for variable, section, field, info in _fields()
    for value in bad_values(variable, field, info)
]


def test_every_setting_is_audited() -> None:
    """Each variable is either refused some value here, or declared as taking any string."""
    audited = {variable for variable, *_ in (case.values for case in CASES)}
    every = {variable for variable, *_ in _fields()}
    free = {
        variable for variable, _, _, info in _fields() if takes_any_string(variable, _bare(info.annotation))
    }
    assert every - audited == free
    assert "OTEL_PERF_ALERTS_OUTBOX_PATH" in free and "OTEL_PERF_ALERTS_WEBHOOK_URL" in audited
    assert len(every) > 100  # the enumeration found the sections (detectors and monitors included)


@pytest.mark.parametrize(("variable", "section", "field", "value"), CASES)
def test_a_refused_value_is_one_line_naming_the_variable(
    variable: str,
    section: type[Section],
    field: str,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    logged: list[str],
) -> None:
    monkeypatch.setenv(variable, value)
    refused = _refused(section, variable)
    if refused is None:  # str fields: one of BAD_STRINGS at least is refused (checked below)
        assert _bare(section.model_fields[field].annotation) is str, f"{variable}={value!r} was accepted"
        return
    assert "\n" not in refused and refused.startswith(f"{variable}="), refused
    assert "is invalid: " in refused and refused.split("is invalid: ", 1)[1].strip()
    if "SecretStr" not in str(section.model_fields[field].annotation):
        assert repr(value)[:40].rstrip("'") in refused  # the value as written (a secret never)
    else:
        assert f"={value!r}" not in refused and "'***'" in refused
    # In the app: that field's default, one line, nothing raised.
    loaded = section.load()
    default = section.model_fields[field].get_default(call_default_factory=True)
    assert getattr(loaded, field) == default
    assert len(logged) == 1 and variable in logged[0] and "\n" not in logged[0], logged
    # Through the composition root too.
    with pytest.raises(SettingsError, match=f"^{variable}="):
        Settings.from_env(strict=True)


def _refused(section: type[Section], variable: str) -> str | None:
    """The strict error's message, or None when the value was taken."""
    try:
        section.load(strict=True)
    except SettingsError as error:
        return str(error)
    return None


@pytest.mark.parametrize(
    "variable",
    sorted(
        variable
        for variable, section, field, info in _fields()
        if _bare(info.annotation) is str and not takes_any_string(variable, str)
    ),
)
def test_every_checked_string_setting_refuses_a_malformed_value(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [section] = [section for name, section, *_ in _fields() if name == variable]
    refused = []
    for value in BAD_STRINGS:
        monkeypatch.setenv(variable, value)
        refused += [value] if _refused(section, variable) else []
    assert refused, f"{variable} took each of {BAD_STRINGS}: add it to ANY_STRING or check it"


@pytest.mark.parametrize("variable", [variable for variable, *_ in _fields()])
def test_an_empty_value_is_no_value(
    variable: str, monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    """As OpenTelemetry's own variables: `OTEL_PERF_ALERTS_WEBHOOK_URL=` (compose's `${X:-}`) is unset."""
    monkeypatch.setenv(variable, "")
    settings = Settings.from_env(strict=True)
    Settings.from_env()
    assert not logged, logged
    for name, section in Settings.sections():
        for field, info in section.model_fields.items():
            if section.env_name(field) == variable:
                assert getattr(settings.section(name), field) == info.get_default(call_default_factory=True)


def _scoped_cases() -> list[Any]:
    cases = []
    for _, section in Settings.sections():
        if not issubclass(section, ScopedSection):
            continue
        own = set(section.model_fields) - {"scopes"} - section.unscoped
        for field in sorted(own):
            info = section.model_fields[field]
            annotation = _bare(info.annotation)
            values: list[Any] = ["lots"] if annotation is not bool else ["maybe"]
            if annotation in (int, float):
                values += _constraint_breakers(field, info, annotation is int)
            cases += [
                pytest.param(section, field, value, id=f"{section.env_name('scopes')}:{field}={value}")
                for value in values
            ]
    return cases


@pytest.mark.parametrize(("section", "field", "value"), _scoped_cases())
def test_a_scope_is_held_to_its_fields_constraints(
    section: type[ScopedSection], field: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    variable = section.env_name("scopes")
    monkeypatch.setenv(variable, json.dumps({"operation:GET /x": {field: value}}))
    refused = _refused(section, variable)
    assert refused is not None and refused.startswith(f"{variable}=") and field in refused, refused
    assert "\n" not in refused


def test_a_value_that_still_fails_after_the_fallback_leaves_the_section_at_its_defaults(
    monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    """`load` never raises outside strict mode, whatever the section does."""
    from pydantic import field_validator
    from pydantic_settings import SettingsConfigDict

    class Fussy(Section):
        model_config = SettingsConfigDict(env_prefix="OTEL_PERF_FUSSY_")
        low: int = 1
        high: int = 2

        @field_validator("high")
        @classmethod
        def _above_low(cls, value: int, info: Any) -> int:
            if value <= info.data.get("low", 0):
                raise ValueError("must be above OTEL_PERF_FUSSY_LOW")
            return value

    monkeypatch.setenv("OTEL_PERF_FUSSY_LOW", "5")  # valid alone; the default high (2) is not above it
    loaded = Fussy.load()
    assert (loaded.low, loaded.high) == (1, 2)
    assert logged and all("\n" not in line for line in logged)
    assert any("OTEL_PERF_FUSSY_HIGH" in line for line in logged)


def test_a_misspelt_variable_gets_the_setting_it_was_meant_to_be(logged: list[str]) -> None:
    environ = {"OTEL_PERF_N_PLUS_ONE_MIN_REPEAT": "3", "OTEL_PERF_ALERTS_WEBHOK_URL": "x"}
    assert dict(unknown_variables(environ)) == {
        "OTEL_PERF_ALERTS_WEBHOK_URL": "OTEL_PERF_ALERTS_WEBHOOK_URL",
        "OTEL_PERF_N_PLUS_ONE_MIN_REPEAT": "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS",
    }
    warn_about_unknown_variables(environ)
    warn_about_unknown_variables(environ)  # a second composition root in the same process
    lines = logged
    assert len(lines) == 2, lines
    assert any(
        "OTEL_PERF_ALERTS_WEBHOK_URL" in line and "did you mean OTEL_PERF_ALERTS_WEBHOOK_URL?" in line
        for line in lines
    )


def _ordered_pairs() -> list[Any]:
    return [
        pytest.param(section, lower, upper, id=f"{section.env_name(lower)}>{section.env_name(upper)}")
        for _, section in Settings.sections()
        for run in section.ordered_fields()
        for lower, upper in itertools.pairwise(run)
    ]


def _contradiction(section: type[Section], lower: str, upper: str) -> dict[str, Any]:
    """One value, within its own bounds, that puts `lower` above `upper`'s default or `upper` below
    `lower`'s."""
    low, high = (section.model_fields[name].get_default() for name in (lower, upper))
    integer = isinstance(high, int)
    candidates = ((lower, high * 2 + 1), (lower, high + 1 if integer else high * 1.01), (upper, low // 2))
    for name, value in candidates:
        try:
            section.model_validate({name: value})
        except ValidationError as error:
            if all(item["type"] == "out_of_order" for item in error.errors()):
                return {name: value}
    raise AssertionError(f"no value of {lower} or {upper} contradicts the other")


def test_the_defaults_are_in_order_and_the_thresholds_are_found() -> None:
    for _, section in Settings.sections():
        section()  # no default contradicts another
    sections = dict(Settings.sections())
    assert ("medium_ms", "high_ms", "critical_ms") in sections["n_plus_one"].ordered_fields()


@pytest.mark.parametrize(("section", "lower", "upper"), _ordered_pairs())
def test_settings_that_contradict_each_other_are_named_together(
    section: type[Section], lower: str, upper: str, monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    """A severity threshold above the next one (a severity never reached), a minimum above its
    whole: one line naming both variables; strict, an error; in the app, both at their defaults
    and every other setting of the section kept."""
    for name, value in _contradiction(section, lower, upper).items():
        monkeypatch.setenv(section.env_name(name), str(value))
    with pytest.raises(SettingsError) as refused:
        section.load(strict=True)
    assert section.env_name(lower) in str(refused.value) and section.env_name(upper) in str(refused.value)
    kept = next(
        (
            name
            for name, info in section.model_fields.items()
            if name != "enabled" and info.annotation is bool
        ),
        "enabled",
    )
    monkeypatch.setenv(section.env_name(kept), "false")
    loaded = section.load()
    assert getattr(loaded, lower) == section.model_fields[lower].get_default()
    assert getattr(loaded, upper) == section.model_fields[upper].get_default()
    assert getattr(loaded, kept) is False
    assert len(logged) == 1 and section.env_name(upper) in logged[0], logged


def test_a_chain_of_contradictions_falls_back_step_by_step(
    monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    from otel_perf.processors.detectors.n_plus_one import NPlusOneSettings

    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_MEDIUM_MS", "300")  # above the default high (250)
    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_CRITICAL_MS", "200")  # below it
    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_MIN_REPEATS", "7")
    loaded = NPlusOneSettings.load()
    assert (loaded.medium_ms, loaded.high_ms, loaded.critical_ms, loaded.min_repeats) == (50, 250, 1000, 7)
    assert len(logged) == 2, logged
