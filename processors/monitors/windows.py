"""Per (service, operation) time windows of request durations and errors: what the monitors read.

One `Aggregate` per window holds a DDSketch of the entry spans' durations (mergeable, 1 % relative
accuracy), the request and error counts, and the same split by `service.version` (for attribution
and canaries). Aggregates of one window made by several writers (uvicorn workers, restarts) merge
into one `Window` before any monitor sees it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from ddsketch import DDSketch
from ddsketch.pb import proto as ddsketch_proto

RELATIVE_ACCURACY = 0.01
MAX_VERSIONS = 8  # per window; more (a deploy storm) are folded into OTHER_VERSION
OTHER_VERSION = "(other)"
NO_VERSION = ""


REQUESTS = "requests"  # durations and failures of an operation's requests
RESOURCE = "resource"  # samples of a utilisation in percent (CPU, memory, disk, a connection pool)


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """What a series is about: one operation (entry span's route or name) of one service, or one
    resource (`cpu host-1`) it runs on."""

    service: str
    operation: str
    kind: str = REQUESTS

    def encode(self) -> str:
        return f"{self.kind}\x1f{self.service}\x1f{self.operation}"

    @classmethod
    def decode(cls, text: str) -> SeriesKey:
        kind, service, operation = text.split("\x1f", 2)
        return cls(service, operation, kind)


@dataclass(slots=True)
class Tally:
    """Requests, errors and durations (ms) of one window, or of one version in it."""

    count: int = 0
    errors: int = 0
    sketch: DDSketch = field(default_factory=lambda: DDSketch(RELATIVE_ACCURACY))
    total: float = 0.0  # the values' sum (DDSketch's protobuf form does not keep it)
    # Quantiles read so far: a sealed window is read at every later judgement of its series.
    _quantiles: dict[float, float] = field(default_factory=dict, repr=False, compare=False)

    def add(self, duration_ms: float, error: bool, count: int = 1) -> None:
        self.count += count
        self.errors += count if error else 0
        value = max(duration_ms, 0.0)
        self.sketch.add(value, count)
        self.total += value * count
        self._quantiles.clear()

    def merge(self, other: Tally) -> None:
        self.count += other.count
        self.errors += other.errors
        self.sketch.merge(other.sketch)
        self.total += other.total
        self._quantiles.clear()

    def quantile(self, q: float) -> float:
        cached = self._quantiles.get(q)
        if cached is None:
            value = self.sketch.get_quantile_value(q) if self.count else None
            cached = self._quantiles[q] = float(value) if value is not None else 0.0
        return cached

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        encoded = ddsketch_proto.DDSketchProto.to_proto(self.sketch).SerializeToString()  # type: ignore[no-untyped-call]
        return {"n": self.count, "e": self.errors, "t": self.total, "s": base64.b64encode(encoded).decode()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        message = ddsketch_proto.pb.DDSketch()  # type: ignore[attr-defined]
        message.ParseFromString(base64.b64decode(data["s"]))
        sketch = ddsketch_proto.DDSketchProto.from_proto(message)  # type: ignore[no-untyped-call]
        return cls(int(data["n"]), int(data["e"]), sketch, float(data.get("t", 0.0)))


@dataclass(slots=True)
class Aggregate:
    """One window in the making: all requests, and by version."""

    total: Tally = field(default_factory=Tally)
    versions: dict[str, Tally] = field(default_factory=dict)

    def add(self, version: str | None, duration_ms: float, error: bool, count: int = 1) -> None:
        self.total.add(duration_ms, error, count)
        name = version or NO_VERSION
        tally = self.versions.get(name)
        if tally is None:
            if len(self.versions) >= MAX_VERSIONS:
                name = OTHER_VERSION
                tally = self.versions.get(name)
            if tally is None:
                tally = self.versions[name] = Tally()
        tally.add(duration_ms, error, count)

    def merge(self, other: Aggregate) -> None:
        self.total.merge(other.total)
        for name, tally in other.versions.items():
            mine = self.versions.get(name)
            if mine is None:
                self.versions[name] = Tally.from_json(tally.to_json())
            else:
                mine.merge(tally)

    def dumps(self) -> str:
        return json.dumps(
            {"t": self.total.to_json(), "v": {name: tally.to_json() for name, tally in self.versions.items()}}
        )

    @classmethod
    def loads(cls, text: str) -> Aggregate:
        data = json.loads(text)
        return cls(Tally.from_json(data["t"]), {name: Tally.from_json(v) for name, v in data["v"].items()})


@dataclass(frozen=True, slots=True)
class Window:
    """A closed window of one series, every writer's aggregate merged: what the monitors see."""

    start_ns: int
    end_ns: int
    total: Tally
    versions: dict[str, Tally]

    @property
    def count(self) -> int:
        return self.total.count

    def dominant_version(self) -> str | None:
        """The version serving most of this window's requests (None: spans carry no version)."""
        if not self.versions:
            return None
        name = max(self.versions, key=lambda each: self.versions[each].count)
        return name or None
