"""Startup checks for what would make monitoring silently incomplete."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("otel_perf.bootstrap")

# What each skipped instrumentation costs the user, in their terms.
_CONSEQUENCES = {
    "sqlalchemy": "no database query will be traced, so N+1 and slow-query detection see nothing",
    "fastapi": "requests will not be traced, so no trace will be analysed",
    "httpx": "outgoing httpx calls will not be traced (no HTTP N+1 detection for them)",
    "requests": "outgoing requests calls will not be traced (no HTTP N+1 detection for them)",
}
_FIXES = {"sqlalchemy": "pip install 'sqlalchemy<2.1'"}


@dataclass(frozen=True)
class SkippedInstrumentation:
    name: str
    required: str
    found: str

    def message(self) -> str:
        consequence = _CONSEQUENCES.get(self.name, "it will not be instrumented")
        fix = _FIXES.get(self.name, f"install a version matching {self.required}")
        return (
            f"otel-perf: {self.found} is installed, but the {self.name} instrumentation only supports "
            f"{self.required}: {consequence}. Fix: {fix}."
        )


def skipped_instrumentations() -> list[SkippedInstrumentation]:
    """Instrumentations the launcher will skip because the library is installed at a version
    outside their declared range (not-installed libraries are fine and not listed)."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts
    from opentelemetry.util._importlib_metadata import entry_points

    skipped = []
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        dist = getattr(entry_point, "dist", None)
        if dist is None:
            continue
        try:
            conflict = get_dist_dependency_conflicts(dist)
        except Exception:  # a broken third-party distribution must not stop startup
            continue
        if conflict is not None and conflict.found:
            skipped.append(
                SkippedInstrumentation(
                    entry_point.name, requirement_text(conflict.required), str(conflict.found)
                )
            )
    return skipped


def warn_about_skipped_instrumentations() -> None:
    for skipped in skipped_instrumentations():
        logger.warning(skipped.message())


def requirement_text(requirement: Any, *, name_only: bool = False) -> str:
    """`sqlalchemy>=1.0.0,<2.1.0` of a requirement (without its `extra == "instruments"` marker)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        parsed = requirement if isinstance(requirement, Requirement) else Requirement(str(requirement))
    except InvalidRequirement:
        return str(requirement)
    if name_only:
        return parsed.name
    # Lower bounds first, as people write ranges.
    specifiers = sorted((str(each) for each in parsed.specifier), key=lambda text: not text.startswith(">"))
    return parsed.name + ",".join(specifiers)
