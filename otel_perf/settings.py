"""The one settings object: every `OTEL_PERF_*` variable, read once at startup and passed down.

Each section lives beside the code it configures (a detector's settings in its module, the
router's in the router); this module only composes them, detectors' from the registry. Only
composition roots (bootstrap, analyzer server, CLI, offline analysis) use it; each component gets
its own section. Nothing reads `os.environ` deeper down.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from otel_perf.alerting.router import RouterSettings
from otel_perf.alerting.sinks import SinkSettings
from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.processors.config import Section
from otel_perf.processors.detectors import REGISTRY
from otel_perf.processors.processor import ProcessorSettings


class Settings(BaseModel):
    """All sections: the hosts' and the router's, and one per registered detector (by its name)."""

    model_config = ConfigDict(frozen=True)

    processor: ProcessorSettings
    router: RouterSettings
    sinks: SinkSettings
    analyzer: AnalyzerSettings
    detectors: dict[str, Section]

    @classmethod
    def sections(cls) -> list[tuple[str, type[Section]]]:
        """(name, section class) of every section; detectors' come from the registry."""
        fixed: list[tuple[str, type[Section]]] = [
            ("processor", ProcessorSettings),
            ("router", RouterSettings),
            ("sinks", SinkSettings),
            ("analyzer", AnalyzerSettings),
        ]
        return fixed + [(name, section) for name, (_, section) in REGISTRY.items()]

    def section(self, name: str) -> Section:
        """The section named `name` (see `sections`)."""
        if name in self.detectors:
            return self.detectors[name]
        section: Section = getattr(self, name)
        return section

    @classmethod
    def from_env(cls, *, strict: bool = False, **sections: Section) -> Settings:
        """Read every section from the environment; `sections` replaces whole sections by name
        (tests, CLI), detectors' included.

        Not strict: a bad value is logged (naming its variable) and falls back to its default.
        Strict: the first bad value raises `otel_perf.processors.config.SettingsError`.
        """
        unknown = set(sections) - {name for name, _ in cls.sections()}
        if unknown:
            raise TypeError(f"unknown settings sections: {sorted(unknown)}")
        loaded = {
            name: sections[name] if name in sections else section.load(strict=strict)
            for name, section in cls.sections()
        }
        detectors = {name: loaded.pop(name) for name in REGISTRY}
        return cls.model_validate({**loaded, "detectors": detectors})


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README table is generated from this."""
    rows = []
    for _, section in Settings.sections():
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
