"""The one settings object: every `OTEL_PERF_*` variable, read once at startup and passed down.

Each section lives beside the code it configures (a detector's settings in its module, the
router's in the router); this module only composes them. Nothing reads `os.environ` deeper down.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from otel_perf.alerting.router import RouterSettings
from otel_perf.alerting.sinks import SinkSettings
from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.config import Section
from otel_perf.processors.detectors import NPlusOneSettings, SlowSpanSettings
from otel_perf.processors.processor import ProcessorSettings


class Settings(BaseModel):
    """All sections. Field names of detector sections equal their registry names."""

    model_config = ConfigDict(frozen=True)

    processor: ProcessorSettings
    router: RouterSettings
    sinks: SinkSettings
    n_plus_one: NPlusOneSettings
    slow_span: SlowSpanSettings
    analyzer: AnalyzerSettings

    @classmethod
    def from_env(cls, *, strict: bool = False, **sections: Section) -> Settings:
        """Read every section from the environment; `sections` replaces whole sections (tests, CLI).

        Not strict: a bad value is logged (naming its variable) and falls back to its default.
        Strict: the first bad value raises `otel_perf.config.SettingsError`.
        """
        values = {
            name: sections[name] if name in sections else field.annotation.load(strict=strict)
            for name, field in cls.model_fields.items()
        }
        return cls(**values)


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README table is generated from this."""
    rows = []
    for field in Settings.model_fields.values():
        section = field.annotation
        for name, info in section.model_fields.items():
            default = info.get_default(call_default_factory=True)
            shown = getattr(default, "label", default)
            rows.append((section.env_name(name), "" if shown is None else str(shown), info.description or ""))
    return rows


def markdown_table() -> str:
    """The README's settings table (a test keeps the README in sync with it)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, default, description in documented_variables():
        shown = f"`{default}`" if default else "unset"
        meaning = description.replace("|", "\\|")
        lines.append(f"| `{name}` | {shown} | {meaning} |")
    return "\n".join(lines)
