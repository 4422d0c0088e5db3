"""Where in the application a DB or HTTP client span was started, found cheaply at span start.

Walks the Python stack up from the instrumentation to the first frame that belongs to the
application (not the standard library, not an installed package, not otel-perf). Whether a code
object is "application" is decided once and cached, so a walk costs a few dict look-ups per frame.
On the way up it also notices SQLAlchemy's lazy loader and reads which relationship it is loading
(`Order.customer`), which turns an N+1 alert into a one-line fix.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any

from otel_perf.processors import semconv

_LIBRARY, _APPLICATION, _LAZY_LOADER = 0, 1, 2
_MAX_DEPTH = 200


def _library_prefixes() -> tuple[str, ...]:
    paths = {sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    try:
        paths.update(site.getsitepackages())
        paths.add(site.getusersitepackages())
    except AttributeError:  # virtualenv's old site.py
        pass
    # otel-perf itself, wherever it is installed (editable installs live outside site-packages).
    import otel_perf

    paths.add(os.path.dirname(os.path.abspath(otel_perf.__file__)))
    paths.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(sorted({os.path.realpath(path) + os.sep for path in paths if path}, key=len, reverse=True))


class CodeLocator:
    """Sets `code.*` (and `perf.orm.lazy_load`) attributes on a span from the calling frames."""

    def __init__(self) -> None:
        self._prefixes = _library_prefixes()
        self._kinds: dict[CodeType, int] = {}
        self._real_paths: dict[str, str] = {}

    def _classify(self, code: CodeType) -> int:
        filename = code.co_filename
        if filename.startswith("<"):
            return _LIBRARY
        if code.co_name == "_load_for_state" and filename.endswith(os.path.join("orm", "strategies.py")):
            return _LAZY_LOADER
        real = self._real_paths.get(filename)
        if real is None:
            real = self._real_paths[filename] = os.path.realpath(filename)
        return _LIBRARY if real.startswith(self._prefixes) else _APPLICATION

    def annotate(self, span: Any, frame: FrameType | None = None) -> None:
        frame = frame if frame is not None else sys._getframe(2)
        kinds = self._kinds
        lazy_load: str | None = None
        depth = 0
        while frame is not None and depth < _MAX_DEPTH:
            code = frame.f_code
            kind = kinds.get(code)
            if kind is None:
                kind = kinds[code] = self._classify(code)
            if kind == _APPLICATION:
                span.set_attributes(
                    {
                        semconv.CODE_FILE[0]: code.co_filename,
                        semconv.CODE_LINE[0]: frame.f_lineno,
                        semconv.CODE_FUNCTION[0]: code.co_qualname
                        if hasattr(code, "co_qualname")
                        else code.co_name,
                    }
                )
                break
            if kind == _LAZY_LOADER and lazy_load is None:
                lazy_load = _relationship_of(frame)
            frame = frame.f_back
            depth += 1
        if lazy_load is not None:
            span.set_attribute(semconv.PERF_ORM_LAZY_LOAD, lazy_load)


def _relationship_of(frame: FrameType) -> str | None:
    """`Order.customer` from a LazyLoader frame (its `self.parent_property`)."""
    loader = frame.f_locals.get("self")
    prop = getattr(loader, "parent_property", None)
    return str(prop) if prop is not None else None
