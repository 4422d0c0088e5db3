"""The base of every settings section, and how a section is read from `OTEL_PERF_*` variables.

Each detector keeps its settings beside its code (a `Section` subclass with its own env prefix);
`otel_perf.settings.Settings` composes them into the one object built at startup and passed down.
A bad value never stops the host app: it is reported in one line naming the variable, and that
field falls back to its default.
"""

from __future__ import annotations

import json
import logging
import re
from fnmatch import translate
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import Field, PrivateAttr, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from otel_perf.processors.errors import SettingsError

logger = logging.getLogger("otel_perf.settings")

SectionT = TypeVar("SectionT", bound="Section")


class Section(BaseSettings):
    """Settings read from environment variables `<env_prefix><FIELD>` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_", extra="ignore", frozen=True)

    @classmethod
    def env_name(cls, field: str) -> str:
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @classmethod
    def load(cls: type[SectionT], *, strict: bool = False, **overrides: Any) -> SectionT:
        """Read the section from the environment. Invalid values are logged and replaced by their
        defaults, unless `strict` (then the first one raises `SettingsError`)."""
        try:
            return cls(**overrides)
        except ValidationError as error:
            problems = describe_errors(cls, error)
            if strict:
                raise SettingsError("; ".join(message for _, message in problems)) from None
            fallback = dict(overrides)
            for field, message in problems:
                logger.error("otel-perf: %s; using the default", message)
                if field in cls.model_fields:
                    fallback[field] = cls.model_fields[field].get_default(call_default_factory=True)
            return cls(**fallback)


def describe_errors(section: type[Section], error: ValidationError) -> list[tuple[str, str]]:
    """(field, one-line message naming the environment variable) for each invalid value.

    (JSON-valued fields are declared `NoDecode` and parsed by a validator, so that a JSON typo is a
    validation error here too, not an exception from the settings source.)"""
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        value = item.get("input")
        shown = value if isinstance(value, (str, int, float)) else type(value).__name__
        if field in section.model_fields and "SecretStr" in str(section.model_fields[field].annotation):
            shown = "***"  # a webhook URL embeds its token: never in a log line
        problems.append((field, f"{section.env_name(field)}={shown!r} is invalid: {item['msg']}"))
    return problems


def json_setting(cls: type, value: object) -> object:
    """A JSON-valued setting from the environment (fields declared `NoDecode`), parsed in a validator
    so that a typo is a validation error naming the variable, not an exception from the source."""
    return json.loads(value) if isinstance(value, str) else value


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
                validated[name] = TypeAdapter(field.rebuild_annotation()).validate_python(raw)
            except ValidationError as error:
                problem = "; ".join(item["msg"] for item in error.errors())
                raise ValueError(f"scope {key!r}: {name}: {problem}") from None
        return validated

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
_MAX_RESOLVED = 4096  # (service, operation) pairs remembered; beyond that, resolved each time
