"""The base of every settings section, and how a section is read from `OTEL_PERF_*` variables.

Each detector keeps its settings beside its code (a `Section` subclass with its own env prefix);
`otel_perf.settings.Settings` composes them into the one object built at startup and passed down.
A bad value never stops the host app: it is reported in one line naming the variable, and that
field falls back to its default.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

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
