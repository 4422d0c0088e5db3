"""Which frames are the application's: the call site an alert names must be the app's own code."""

from __future__ import annotations

import os
import sysconfig
from types import CodeType

from otel_perf.processors.code_location import CodeLocator


def _code_at(path: str) -> CodeType:
    # Distinct source per path: equal code objects compare (and cache) equal whatever their file.
    return compile(f"path = {path!r}", path, "exec")


def test_console_scripts_and_installed_packages_are_not_the_application() -> None:
    """`bin/uvicorn` starts the app; naming its `<module>` as the place of a query misleads (found
    on a public app, for queries run under asyncio.gather)."""
    locator = CodeLocator()
    paths = sysconfig.get_paths()
    assert locator._kind(_code_at(os.path.join(paths["scripts"], "uvicorn"))) == 0
    assert locator._kind(_code_at(os.path.join(paths["purelib"], "sqlalchemy", "orm", "session.py"))) == 0
    assert locator._kind(_code_at(os.path.abspath(__file__))) == 1
