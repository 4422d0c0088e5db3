"""The one settings object: every `OTEL_PERF_*` variable, read once at startup and passed down.

Each section lives beside the code it configures (a detector's settings in its module, the
router's in the router); this module only composes them, detectors' from the registry. Only
composition roots (bootstrap, analyzer server, CLI, offline analysis) use it; each component gets
its own section. Nothing reads `os.environ` deeper down.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from importlib import resources

from pydantic import BaseModel, ConfigDict

from otel_perf.alerting.router import RouterSettings
from otel_perf.alerting.sinks import SinkSettings
from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.processors.config import ScopedSection, Section
from otel_perf.processors.detectors import REGISTRY
from otel_perf.processors.monitors import REGISTRY as MONITORS
from otel_perf.processors.monitors import MonitorSettings
from otel_perf.processors.processor import ProcessorSettings

logger = logging.getLogger("otel_perf.settings")


class Settings(BaseModel):
    """All sections: the hosts', the router's and the watcher's, and one per registered detector and
    monitor (by its name)."""

    model_config = ConfigDict(frozen=True)

    processor: ProcessorSettings
    router: RouterSettings
    sinks: SinkSettings
    analyzer: AnalyzerSettings
    monitor: MonitorSettings
    detectors: dict[str, Section]
    monitors: dict[str, Section]

    @classmethod
    def sections(cls) -> list[tuple[str, type[Section]]]:
        """(name, section class) of every section; detectors' and monitors' come from their registries."""
        fixed: list[tuple[str, type[Section]]] = [
            ("processor", ProcessorSettings),
            ("router", RouterSettings),
            ("sinks", SinkSettings),
            ("analyzer", AnalyzerSettings),
            ("monitor", MonitorSettings),
        ]
        return (
            fixed
            + [(name, section) for name, (_, section) in REGISTRY.items()]
            + [(name, section) for name, (_, section) in MONITORS.items()]
        )

    def section(self, name: str) -> Section:
        """The section named `name` (see `sections`)."""
        if name in self.detectors:
            return self.detectors[name]
        if name in self.monitors:
            return self.monitors[name]
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
        monitors = {name: loaded.pop(name) for name in MONITORS}
        return cls.model_validate({**loaded, "detectors": detectors, "monitors": monitors})


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README table is generated from this."""
    rows = []
    for _, section in Settings.sections():
        # A section's own settings first, then what its base adds (`scopes`).
        inherited = [name for name in section.model_fields if name in ScopedSection.model_fields]
        names = [name for name in section.model_fields if name not in inherited] + inherited
        for name in names:
            info = section.model_fields[name]
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


_CONFIG_VARIABLE = re.compile(r"\$\{env:(OTEL_PERF_[A-Z0-9_]+)")


def _variables_read_elsewhere() -> set[str]:
    """`OTEL_PERF_*` names that are not settings but are read all the same: by the shipped collector
    configs (`${env:OTEL_PERF_…}`) and by the toolchain (binary overrides)."""
    # Imported only when a name is not a setting: the toolchain (YAML, …) stays out of app start-up,
    # and it is only there with the `stack` extra.
    try:
        from otel_perf.stack.toolchain import BIN_DIR_ENV, OVERRIDE_ENV
    except ImportError:
        names: set[str] = set()
    else:
        names = {*OVERRIDE_ENV.values(), BIN_DIR_ENV}
    for config in resources.files("otel_perf.collector").iterdir():
        if config.name.endswith((".yaml", ".yml")):
            names.update(_CONFIG_VARIABLE.findall(config.read_text(encoding="utf-8")))
    return names


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """(name, closest known name or None) for each `OTEL_PERF_*` variable nothing reads: a typo in
    a setting otherwise silently leaves its default in place."""
    settings = {name for name, _, _ in documented_variables()}
    candidates = [
        name for name in environ if name.upper().startswith("OTEL_PERF_") and name.upper() not in settings
    ]
    if not candidates:
        return []
    known = settings | _variables_read_elsewhere()
    unknown = sorted(name for name in candidates if name.upper() not in known)
    return [
        (name, next(iter(difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)), None))
        for name in unknown
    ]


_warned: set[str] = set()  # unknown names this process already warned about


def warn_about_unknown_variables(environ: Mapping[str, str]) -> None:
    """One warning line per unknown `OTEL_PERF_*` name, with the closest setting: once per process
    and name (several composition roots may run in one process)."""
    for name, suggestion in unknown_variables(environ):
        if name in _warned:
            continue
        _warned.add(name)
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        logger.warning("otel-perf: %s is not a setting otel-perf knows, so it has no effect%s", name, hint)
