"""How much CPU in-process analysis may take: a token bucket of CPU seconds.

The span processor asks at each trace's start whether to analyse it; the worker pays for every
analysis with the CPU time it measured. Under light traffic every trace is analysed; under heavy
traffic analysis is capped at `share` of one core, so the host app's overhead is bounded by
configuration, not by traffic. An operation not analysed for `fairness_s` is analysed anyway, so
a hot endpoint can't starve the others. What is skipped is exported unanalysed (and counted); the
collector-side analyzer, which scales out, still sees every trace.
"""

from __future__ import annotations

import time
from collections import OrderedDict

_MAX_OPERATIONS = 2048


class AnalysisBudget:
    def __init__(self, share: float, fairness_s: float = 10.0) -> None:
        self.share = share
        self.fairness_s = fairness_s
        self._capacity = max(share, 0.01) * 1.0  # at most a second's worth of budget saved up
        self._tokens = 0.0  # nothing saved up at start: the share holds from the first second
        self._refilled = time.monotonic()
        self._last_analysed: OrderedDict[str, float] = OrderedDict()

    @property
    def unlimited(self) -> bool:
        return self.share >= 1.0

    def allow(self, operation: str) -> bool:
        """Analyse a trace of `operation` now? (Callers serialise calls to the budget.)"""
        if self.unlimited:
            return True
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * self.share)
        self._refilled = now
        if self._tokens > 0:
            return True
        last = self._last_analysed.get(operation)
        return last is None or now - last > self.fairness_s

    def charge(self, cpu_seconds: float, *operations: str | None) -> None:
        """An analysis took `cpu_seconds` of CPU; the trace was each of `operations` (a request's
        name when it started and, behind a mount, its whole route: both asked `allow`)."""
        if self.unlimited:
            return
        self._tokens -= cpu_seconds
        now = time.monotonic()
        for operation in operations:
            if operation is not None:
                self._last_analysed[operation] = now
                self._last_analysed.move_to_end(operation)
        while len(self._last_analysed) > _MAX_OPERATIONS:
            self._last_analysed.popitem(last=False)
