"""The detector registry: a new detector is one module here plus one line in `REGISTRY`."""

from __future__ import annotations

from otel_perf.processors.detectors.base import Detector
from otel_perf.processors.detectors.n_plus_one import NPlusOneDetector, NPlusOneSettings
from otel_perf.processors.detectors.slow_span import SlowSpanDetector, SlowSpanSettings

# name → (detector class, settings class); `Settings` has one field per name.
REGISTRY: dict[str, tuple[type, type]] = {
    "n_plus_one": (NPlusOneDetector, NPlusOneSettings),
    "slow_span": (SlowSpanDetector, SlowSpanSettings),
}

__all__ = [
    "REGISTRY",
    "Detector",
    "NPlusOneDetector",
    "NPlusOneSettings",
    "SlowSpanDetector",
    "SlowSpanSettings",
]
