"""The detector registry: a new detector is one module here plus one line in `REGISTRY`.

The composed settings (`otel_perf.settings.Settings`) take their detector sections from here, and
the hosts build their detectors from here: nothing else lists detectors.
"""

from __future__ import annotations

from otel_perf.processors.config import Section
from otel_perf.processors.detectors.base import Detector
from otel_perf.processors.detectors.consecutive import ConsecutiveCallsDetector, ConsecutiveCallsSettings
from otel_perf.processors.detectors.mn_plus_one import MNPlusOneDetector, MNPlusOneSettings
from otel_perf.processors.detectors.n_plus_one import NPlusOneDetector, NPlusOneSettings
from otel_perf.processors.detectors.pool_wait import PoolWaitDetector, PoolWaitSettings
from otel_perf.processors.detectors.slow_span import SlowSpanDetector, SlowSpanSettings
from otel_perf.processors.detectors.unused_eager_load import UnusedEagerLoadDetector, UnusedEagerLoadSettings

# name → (detector class, its settings section); the name is the section's key in the settings.
REGISTRY: dict[str, tuple[type[Detector], type[Section]]] = {
    "n_plus_one": (NPlusOneDetector, NPlusOneSettings),
    "slow_span": (SlowSpanDetector, SlowSpanSettings),
    "pool_exhaustion": (PoolWaitDetector, PoolWaitSettings),
    "unused_eager_load": (UnusedEagerLoadDetector, UnusedEagerLoadSettings),
    "mn_plus_one": (MNPlusOneDetector, MNPlusOneSettings),
    "consecutive_calls": (ConsecutiveCallsDetector, ConsecutiveCallsSettings),
}

__all__ = [
    "REGISTRY",
    "Detector",
    "NPlusOneDetector",
    "NPlusOneSettings",
    "SlowSpanDetector",
    "SlowSpanSettings",
]
