"""The README is the user's contract: its settings table must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from otel_perf.settings import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_matches_the_code() -> None:
    match = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", README.read_text(), re.S)
    assert match, "README lacks the settings markers"
    assert match.group(1) == markdown_table(), (
        "README settings table is stale: paste `otel-perf settings --markdown`"
    )
