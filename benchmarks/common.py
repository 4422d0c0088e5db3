"""Shared by the benchmarks: interleaved rounds, medians, and how results are printed."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sysconfig
from collections.abc import Callable, Sequence
from typing import Any


def interleaved(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once per round, in turn (A B C A B C …): drift hits all of them alike."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            results[name].append(run())
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{python}, {os.cpu_count()} CPUs, {platform.machine()}"


def emit(benchmark: str, **figures: Any) -> None:
    """One JSON line per result: what BENCHMARKS.md quotes."""
    print(json.dumps({"benchmark": benchmark, **figures}, default=lambda value: round(value, 4)))


def library_frames(depth: int) -> Callable[[Callable[[], Any]], Any]:
    """A function calling its argument beneath `depth` frames that look like an installed library
    (compiled with a file name in site-packages), as ORM and driver frames sit between an app's
    query and the instrumentation that starts its span."""
    filename = os.path.join(sysconfig.get_paths()["purelib"], "benchlib", "engine.py")
    namespace: dict[str, Any] = {}
    source = (
        "def call(depth, innermost):\n    return innermost() if depth == 0 else call(depth - 1, innermost)\n"
    )
    exec(compile(source, filename, "exec"), namespace)
    call = namespace["call"]
    return lambda innermost: call(depth, innermost)
