"""The base of every settings section, and how a section is read from `OTEL_PERF_*` variables.

Each detector keeps its settings beside its code (a `Section` subclass with its own env prefix);
`otel_perf.settings.Settings` composes them into the one object built at startup and passed down.
A bad value never stops the host app: it is reported in one line naming the variable and what it
expects, and that field falls back to its default (`otel-perf` commands, strict, stop on it
instead). An empty value is no value (the default), as OpenTelemetry's own variables have it.
Numbers are finite and bounded by what their unit can mean (`_s`, `_ms`, `_days`): a duration of
1e300 s would otherwise pass here and break a timer or a state file later, far from its variable.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from fnmatch import translate
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from otel_perf.processors.errors import SettingsError

logger = logging.getLogger("otel_perf.settings")

SectionT = TypeVar("SectionT", bound="Section")

# The largest value a number of each unit may take (by the field name's suffix): far beyond any
# sensible setting, and small enough that it still fits a timer and nanoseconds in 64 bits.
_TEN_YEARS_S = 10 * 365 * 86400
MAGNITUDE_LIMITS: tuple[tuple[str, float, str], ...] = (
    ("_days", 3650, "3650 days (10 years)"),
    ("_ms", _TEN_YEARS_S * 1000, f"{_TEN_YEARS_S * 1000} ms (10 years)"),
    ("_s", _TEN_YEARS_S, f"{_TEN_YEARS_S} s (10 years)"),
)
MAX_NUMBER = 2**53  # any other number (counts, bytes): beyond it, no bound a float can still tell apart
_SHOWN_CHARS = 120  # of a bad value in its log line
_SEVERITY_LEVELS = ("medium", "high", "critical")  # thresholds named after them must not decrease
_OUT_OF_ORDER = "out_of_order"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def magnitude_limit(field: str) -> tuple[float, str]:
    """(largest value, in words) a number named `field` may take."""
    for suffix, limit, words in MAGNITUDE_LIMITS:
        if field.endswith(suffix):
            return limit, words
    return MAX_NUMBER, "2**53"


def check_magnitude(field: str, value: Any) -> Any:
    """`value` when it is no number or within `magnitude_limit(field)`; a ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        limit, words = magnitude_limit(field)
        if abs(value) > limit:
            raise ValueError(f"must be at most {words}")
    return value


class Section(BaseSettings):
    """Settings read from environment variables `<env_prefix><FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix="OTEL_PERF_", extra="ignore", frozen=True, env_ignore_empty=True, allow_inf_nan=False
    )

    @field_validator("*")
    @classmethod
    def _bounded(cls, value: Any, info: ValidationInfo) -> Any:
        return check_magnitude(info.field_name or "", value)

    # Fields whose values must not decrease in this order (beside the severity thresholds, found
    # by name: medium_… ≤ high_… ≤ critical_…), e.g. a minimum and the whole it is taken from.
    ascending: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @classmethod
    def ordered_fields(cls) -> tuple[tuple[str, ...], ...]:
        """Each run of fields whose values must not decrease: a severity threshold above the next
        one leaves a severity unreachable, a minimum above its whole never lets anything through."""
        ladders: dict[str, list[str]] = {}
        for level in _SEVERITY_LEVELS:
            for name in cls.model_fields:
                if name == level or name.startswith(f"{level}_"):
                    ladders.setdefault(name.removeprefix(level), []).append(name)
        return tuple(tuple(names) for names in ladders.values() if len(names) > 1) + cls.ascending

    @classmethod
    def out_of_order(cls, values: dict[str, Any]) -> tuple[str, str] | None:
        """The first pair of `values` (field → value) that decreases where `ordered_fields` says it
        must not, or None."""
        for names in cls.ordered_fields():
            present = [name for name in names if values.get(name) is not None]
            for lower, upper in itertools.pairwise(present):
                if values[lower] > values[upper]:
                    return lower, upper
        return None

    def _ordered_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for names in self.ordered_fields() for name in names}

    @classmethod
    def _out_of_order_error(cls, fields: str, what: str, lower: str, upper: str) -> PydanticCustomError:
        """The error `load` and `describe_errors` read: `fields` go back to their defaults."""
        run = next(names for names in cls.ordered_fields() if lower in names and upper in names)
        order = ", ".join(cls.env_name(name) for name in run)
        message = f"{what}: they must not decrease in the order {order}"
        return PydanticCustomError(_OUT_OF_ORDER, "{message}", {"fields": fields, "message": message})

    @model_validator(mode="after")
    def _in_order(self) -> Section:
        values = self._ordered_values()
        pair = self.out_of_order(values)
        if pair is not None:
            lower, upper = pair
            raise self._out_of_order_error(
                f"{lower},{upper}",
                f"{self.env_name(lower)} ({_number(values[lower])}) is above "
                f"{self.env_name(upper)} ({_number(values[upper])})",
                lower,
                upper,
            )
        return self

    @classmethod
    def load(cls: type[SectionT], *, strict: bool = False, **overrides: Any) -> SectionT:
        """Read the section from the environment. Invalid values are logged (one line each) and
        replaced by their defaults, unless `strict` (then they raise one `SettingsError`). Never
        raises otherwise: a section that still can't be built is its defaults."""
        try:
            return cls(**overrides)
        except (ValidationError, SourceError) as error:
            problems = describe_errors(cls, error)
        if strict:
            raise SettingsError("; ".join(message for _, message in problems))
        fallback = dict(overrides)
        reset: set[str] = set()
        while True:  # each round puts at least one more field back to its default
            before = len(reset)
            for fields, message in problems:
                using = "using the defaults of both" if "," in fields else "using the default"  # a pair
                logger.error("otel-perf: %s; %s", message, using)
                for field in fields.split(","):  # two names: a pair out of order (both go back)
                    if field in cls.model_fields:
                        reset.add(field)
                        fallback[_init_key(cls, field)] = cls.model_fields[field].get_default(
                            call_default_factory=True
                        )
            try:
                return cls(**fallback)
            except (ValidationError, SourceError) as error:
                problems = describe_errors(cls, error)
                if isinstance(error, SourceError) or len(reset) == before:
                    break  # e.g. the source itself failed
        logger.error(
            "otel-perf: %s*: %s; using the defaults of them all",
            cls.model_config.get("env_prefix", ""),
            "; ".join(message for _, message in problems),
        )
        defaults = {
            _init_key(cls, name): info.get_default(call_default_factory=True)
            for name, info in cls.model_fields.items()
        }
        return cls(**{**defaults, **overrides})  # values given outright: no variable is read


def _init_key(section: type[Section], field: str) -> str:
    """The key a value given outright must have to replace the variable's: a field read from a
    variable outside the section's prefix (`validation_alias`) is keyed by that name (pydantic
    before 2.11 prefers the alias when both are given)."""
    alias = section.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else field


def _shown(section: type[Section], field: str, value: object) -> str:
    """The value as the user wrote it (a secret never), cut to fit one line."""
    if field in section.model_fields and "SecretStr" in str(section.model_fields[field].annotation):
        return "'***'"  # a webhook URL embeds its token: never in a log line
    text = repr(value) if isinstance(value, (str, int, float)) else repr(str(value))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 4] + "…" + text[-1]


def describe_errors(section: type[Section], error: Exception) -> list[tuple[str, str]]:
    """(field, one-line message naming the environment variable, its value and what it expects) for
    each invalid value.

    The value shown is the variable's own (not the part of it that failed: `{"a": 3}` rather than
    `3`), and where in it the problem is comes first in the message. (JSON-valued fields are declared
    `NoDecode` and parsed by a validator, so that a JSON typo is a validation error here too.)"""
    if not isinstance(error, ValidationError):
        return [("", f"{section.model_config.get('env_prefix', '')}*: {error}")]
    raw = _raw_values(section)
    problems = []
    for item in error.errors():
        loc = item["loc"]
        if item["type"] == _OUT_OF_ORDER:  # the message names both variables and their values
            context = item.get("ctx") or {}
            problems.append((str(context.get("fields", "")), str(context.get("message", item["msg"]))))
            continue
        field = str(loc[0]) if loc else ""
        value = raw.get(field, item.get("input"))
        message = str(item["msg"]).removeprefix("Value error, ")
        inner = ".".join(str(part) for part in loc[1:])
        where = f"at {inner}: " if inner else ""
        text = f"{section.env_name(field)}={_shown(section, field, value)} is invalid: {where}{message}"
        problems.append((field, " ".join(text.split())))  # one line, whatever the value held
    return problems


def _raw_values(section: type[Section]) -> dict[str, str]:
    """The section's variables as set in the environment, by field (what the user wrote)."""
    names = {section.env_name(field): field for field in section.model_fields}
    return {names[name.upper()]: value for name, value in os.environ.items() if name.upper() in names}


def json_setting(cls: type, value: object) -> object:
    """A JSON-valued setting from the environment (fields declared `NoDecode`), parsed in a validator
    so that a typo is a validation error naming the variable, not an exception from the source."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as error:
        raise ValueError(f"expected JSON ({error})") from None


SCOPE_FIELDS = ("operation", "service")  # most specific first


class ScopedSection(Section):
    """A section whose values may differ per service and per operation (endpoint, job, `startup`):
    `scopes` maps `service:<glob>` or `operation:<glob>` to some of the section's own fields, e.g.
    `{"operation:GET /reports/*": {"min_repeats": 20}, "service:batch-*": {"enabled": false}}`.
    `at(service, operation)` is the section as it applies there: the defaults, then the first
    matching service scope, then the first matching operation scope."""

    scopes: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict,
        description='JSON object of settings per service or operation, e.g. {"operation:GET /reports/*": '
        '{"enabled": false}, "service:batch-*": {...}}; keys are service:<glob> or operation:<glob>.',
    )
    # Fields read before a trace's operation is known, which therefore cannot differ per scope.
    unscoped: ClassVar[frozenset[str]] = frozenset()
    _matchers: list[tuple[int, re.Pattern[str], dict[str, Any]]] = PrivateAttr(default_factory=list)
    _resolved: dict[tuple[str, str], Any] = PrivateAttr(default_factory=dict)

    _parse_scopes = field_validator("scopes", mode="before")(json_setting)

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        own = set(cls.model_fields) - {"scopes"} - cls.unscoped
        for key, values in value.items():
            field, _, pattern = key.partition(":")
            if field not in SCOPE_FIELDS or not pattern:
                raise ValueError(f"scope key {key!r} must be service:<glob> or operation:<glob>")
            unknown = set(values) - own
            if unknown:
                raise ValueError(
                    f"scope {key!r} sets {sorted(unknown)}: not settings of this section that can differ "
                    f"per scope ({', '.join(sorted(own))})"
                )
            cls._validated(key, values)
        return value

    @classmethod
    def _validated(cls, key: str, values: dict[str, Any]) -> dict[str, Any]:
        """A scope's values as their fields take them (constraints included, no environment read)."""
        validated = {}
        for name, raw in values.items():
            field = cls.model_fields[name]
            try:
                validated[name] = check_magnitude(
                    name, TypeAdapter(field.rebuild_annotation(), config=_FINITE).validate_python(raw)
                )
            except (ValidationError, ValueError) as error:
                problem = (
                    "; ".join(item["msg"] for item in error.errors())
                    if isinstance(error, ValidationError)
                    else str(error)
                )
                raise ValueError(f"scope {key!r}: {name}: {problem}") from None
        return validated

    @model_validator(mode="after")
    def _scopes_in_order(self) -> ScopedSection:
        """A scope's values with the section's own must keep `ordered_fields` in order too."""
        own = self._ordered_values()
        for key, values in self.scopes.items():
            pair = self.out_of_order({**own, **self._validated(key, values)})
            if pair is not None:
                lower, upper = pair
                raise self._out_of_order_error(
                    "scopes",
                    f"{self.env_name('scopes')}: scope {key!r} puts {self.env_name(lower)} above "
                    f"{self.env_name(upper)} there",
                    lower,
                    upper,
                )
        return self

    def model_post_init(self, context: Any) -> None:
        rank = {field: position for position, field in enumerate(SCOPE_FIELDS)}
        self._matchers = sorted(
            (
                (
                    rank[field],
                    re.compile(translate(pattern)),
                    self._validated(key, values),
                )
                for key, values in self.scopes.items()
                for field, _, pattern in [key.partition(":")]
            ),
            key=lambda item: -item[0],  # service scopes first, so an operation's values win
        )

    def at(self: ScopedT, service: str, operation: str) -> ScopedT:
        """This section as it applies to `operation` of `service` (itself when no scope matches)."""
        if not self._matchers:
            return self
        key = (service, operation)
        resolved = self._resolved.get(key)
        if resolved is None:
            update: dict[str, Any] = {}
            matched: set[int] = set()
            for rank, pattern, values in self._matchers:
                subject = operation if SCOPE_FIELDS[rank] == "operation" else service
                if rank not in matched and pattern.match(subject):
                    update.update(values)
                    matched.add(rank)
            resolved = self.model_copy(update=update) if update else self
            if len(self._resolved) < _MAX_RESOLVED:
                self._resolved[key] = resolved
        return resolved

    def lowest(self, field: str) -> float:
        """The smallest value `field` takes in any scope: what a cheap pre-check must allow for."""
        values = [getattr(self, field)] + [
            values[field] for _, _, values in self._matchers if field in values
        ]
        return float(min(values))


ScopedT = TypeVar("ScopedT", bound=ScopedSection)
_FINITE = ConfigDict(allow_inf_nan=False)
_MAX_RESOLVED = 4096  # (service, operation) pairs remembered; beyond that, resolved each time
