"""Where in the application a DB or HTTP client span was started, found cheaply at span start.

The first application frame (not the standard library, not an installed package, not otel-perf)
above the instrumentation. Walking the stack costs ~0.4 µs a frame in Python and ORM calls sit
30-40 frames deep, so the walk is done once per call path and its depth remembered: afterwards
a span of the same kind (instrumentation scope and span name) jumps straight to the remembered
depth (`sys._getframe(n)` walks in C) and only checks that the frame there is application code
and the one below it is not. A miss falls back to the walk and learns the new depth.
"""

from __future__ import annotations

import asyncio.events
import asyncio.runners
import os
import site
import sys
import sysconfig
from types import CodeType, FrameType
from typing import TYPE_CHECKING

from otel_perf.processors import semconv

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Span

_LIBRARY, _APPLICATION = 0, 1
# The frame that runs one step of an asyncio task or callback: a walk up a task's stack ends here.
_EVENT_LOOP_STEP = asyncio.events.Handle._run.__code__
# … and where an event loop was started, for loops whose steps run in C (uvloop): whatever is below
# (`uvicorn.run` in main.py) did not make this call.
_LOOP_BOUNDARIES = frozenset(
    [_EVENT_LOOP_STEP, asyncio.runners.run.__code__]
    + ([asyncio.runners.Runner.run.__code__] if hasattr(asyncio.runners, "Runner") else [])  # 3.11+
)
_MAX_DEPTH = 200
_DEPTHS_PER_KIND = 4


def _library_prefixes() -> tuple[str, ...]:
    # `scripts`: console scripts such as the venv's `bin/uvicorn`, which start the app, are not it.
    paths = {
        sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib", "scripts")
    }
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # virtualenv's old site.py
        pass
    # otel-perf itself, wherever it is installed (editable installs live outside site-packages). The
    # parent package is always imported before this module: its location, not its code, is needed.
    package_file = getattr(sys.modules.get("otel_perf"), "__file__", None)
    if package_file:
        paths.add(os.path.dirname(os.path.abspath(package_file)))
    paths.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(sorted({os.path.realpath(path) + os.sep for path in paths if path}, key=len, reverse=True))


class CodeLocator:
    """Sets `code.file.path`, `code.line.number`, `code.function.name` on a starting span."""

    def __init__(self) -> None:
        self._prefixes = _library_prefixes()
        self._kinds: dict[CodeType, int] = {}
        self._depths: dict[tuple[str, str], list[int]] = {}

    def _kind(self, code: CodeType) -> int:
        kind = self._kinds.get(code)
        if kind is None:
            filename = code.co_filename
            if filename.startswith("<"):
                kind = _LIBRARY
            else:
                kind = _LIBRARY if os.path.realpath(filename).startswith(self._prefixes) else _APPLICATION
            self._kinds[code] = kind
        return kind

    def annotate(self, span: Span) -> None:
        """Called from the span processor's `on_start` (the offsets below assume that caller)."""
        scope = span.instrumentation_scope
        key = (scope.name if scope is not None else "", span.name)
        depths = self._depths.get(key)
        if depths:
            for depth in depths:
                try:
                    probe = sys._getframe(depth)
                except ValueError:
                    continue
                if (
                    self._kind(probe.f_code) == _APPLICATION
                    and self._kind(sys._getframe(depth - 1).f_code) == _LIBRARY
                ):
                    _set_location(span, probe)
                    return
        frame: FrameType | None = sys._getframe(1)
        depth = 1
        while frame is not None and depth < _MAX_DEPTH:
            if frame.f_code in _LOOP_BOUNDARIES:
                return  # below: whoever started the event loop (`uvicorn.run` in main.py), not this task
            if self._kind(frame.f_code) == _APPLICATION:
                _set_location(span, frame)
                learned = self._depths.setdefault(key, [])
                if depth not in learned and depth > 1:
                    learned.insert(0, depth)
                    del learned[_DEPTHS_PER_KIND:]
                return
            frame, depth = frame.f_back, depth + 1
        if frame is None:
            beyond = self._application_frame_beyond_greenlet()
            if beyond is not None:
                _set_location(span, beyond)

    def _application_frame_beyond_greenlet(self) -> FrameType | None:
        """Async SQLAlchemy runs the ORM in a greenlet (`greenlet_spawn`), whose stack ends at its
        own start; the awaiting application coroutine is on the parent greenlet's stack, which is
        suspended at the switch. Walk that one (not learned: the depth varies with the await chain)."""
        greenlet = sys.modules.get("greenlet")
        if greenlet is None:
            return None
        current = greenlet.getcurrent()
        parent = getattr(current, "parent", None)
        frame: FrameType | None = getattr(parent, "gr_frame", None) if parent is not None else None
        depth = 0
        while frame is not None and depth < _MAX_DEPTH and frame.f_code not in _LOOP_BOUNDARIES:
            if self._kind(frame.f_code) == _APPLICATION:
                return frame
            frame, depth = frame.f_back, depth + 1
        return None


def _set_location(span: Span, frame: FrameType) -> None:
    code = frame.f_code
    span.set_attributes(
        {
            semconv.CODE_FILE[0]: code.co_filename,
            semconv.CODE_LINE[0]: frame.f_lineno,
            semconv.CODE_FUNCTION[0]: getattr(code, "co_qualname", code.co_name),
        }
    )
