"""The pages under docs/ are a new user's first contact: every page the README links exists, every
link and anchor between them resolves, every `OTEL_PERF_*` name and `otel-perf` command they mention
is one the code knows, every default they quote is the code's, and the quick start's app, run as
the page says, prints the alert the page shows."""

from __future__ import annotations

import argparse
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from otel_perf.cli import _parser
from otel_perf.settings import documented_variables
from otel_perf.stack.toolchain import BIN_DIR_ENV, OVERRIDE_ENV
from tests.support.apps import free_port, start_app, wait_until

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
REQUIRED_PAGES = {
    "quickstart.md",
    "detectors.md",
    "launch-modes.md",
    "pipeline.md",
    "deployment.md",
    "pytest-plugin.md",
    "troubleshooting.md",
}

FENCE = re.compile(r"^[ ]*(```|~~~).*?^[ ]*\1[^\n]*$", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SHELL_BLOCKS = {"sh", "bash", "shell", "console"}
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# A name, and whether it is written as a prefix (`OTEL_PERF_POOL_WAIT_*`, `OTEL_PERF_…`).
VARIABLE = re.compile(r"(OTEL_PERF_[A-Z0-9_]*)(\*|…)?")
CONFIG_VARIABLE = re.compile(r"\$\{env:(OTEL_PERF_[A-Z0-9_]+)")
DEFAULT_ROW = re.compile(r"^\| `(OTEL_PERF_[A-Z0-9_]+)` \| (`[^`]*`|unset) \|", re.M)


def _settings() -> dict[str, str]:
    return {name: default for name, default, _ in documented_variables()}


def _known_variables() -> set[str]:
    """Settings, plus the names read elsewhere: the shipped collector configs' `${env:…}` and the
    toolchain's binary overrides (documented in README and deploy/README.md)."""
    names = set(_settings())
    for config in (ROOT / "collector").glob("*.y*ml"):
        names.update(CONFIG_VARIABLE.findall(config.read_text(encoding="utf-8")))
    names.update({*OVERRIDE_ENV.values(), BIN_DIR_ENV})
    return names


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(char for char in text if char in " -_" or unicodedata.category(char)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8")))


def _code(page: Path) -> list[str]:
    """Where commands are written: every line of a shell block, the `$ ` prompt lines of other
    blocks (the rest is a program's output, such as pytest's `otel-perf findings` table), and
    every inline code span."""
    text = page.read_text(encoding="utf-8")
    pieces = []
    for match in FENCE.finditer(text):
        first, *lines = match.group(0).splitlines()[:-1]
        shell = first.strip().strip("`~").strip() in SHELL_BLOCKS
        pieces += [line for line in lines if shell or line.lstrip().startswith("$ ")]
    pieces += CODE_SPAN.findall(FENCE.sub("", text))
    return pieces


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _invocations(piece: str) -> list[list[str]]:
    """The words after each `otel-perf` in command position (start, after a pipe, `&&`, `;`,
    `$(`, or leading VAR=value assignments), up to the end of that command or a comment."""
    tokens = piece.replace("$(", " $( ").replace(")", " ) ").split()
    found = []
    start = True
    for index, token in enumerate(tokens):
        if token in ("|", "||", "&&", ";", "$", "$(", "\\"):
            start = True
            continue
        if start and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", token):
            continue
        if start and token == "otel-perf":
            words = []
            for word in tokens[index + 1 :]:
                if word.startswith("#") or word in ("|", "||", "&&", ";", ")"):
                    break
                words.append(word)
            found.append(words)
        start = False
    return found


def test_docs_pages_exist_and_the_readme_links_each_one() -> None:
    assert {page.name for page in PAGES} >= REQUIRED_PAGES
    linked = {target.split("#")[0] for target in _links(README) if target.startswith("docs/")}
    missing = sorted(target for target in linked if not (ROOT / target).is_file())
    assert not missing, f"README links docs pages that don't exist: {missing}"
    unlinked = sorted(page.name for page in PAGES if f"docs/{page.name}" not in linked)
    assert not unlinked, f"docs pages the README doesn't link: {unlinked}"


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_and_their_anchors_resolve(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        if page == README and not (path_part.startswith("docs/") or path_part == ""):
            continue  # the README's other links are tests/test_docs.py's business
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading makes #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_otel_perf_variable_named_is_real(page: Path) -> None:
    known = _known_variables()
    unknown = set()
    for match in VARIABLE.finditer(page.read_text(encoding="utf-8")):
        name, prefix = match.group(1), match.group(2)
        if prefix:
            if not any(each.startswith(name) for each in known):
                unknown.add(name + prefix)
        elif name not in known:
            unknown.add(name)
    assert not unknown, f"{page.name} names variables nothing reads: {sorted(unknown)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_defaults_quoted_in_tables_are_the_codes(page: Path) -> None:
    settings = _settings()
    wrong = []
    for name, shown in DEFAULT_ROW.findall(page.read_text(encoding="utf-8")):
        if name not in settings:
            continue  # named but not a setting: the test above says so
        expected = f"`{settings[name]}`" if settings[name] else "unset"
        if shown != expected:
            wrong.append(f"{name}: page says {shown}, the code {expected}")
    assert not wrong, f"{page.name}: " + "; ".join(wrong)


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_otel_perf_command_and_option_named_exists(page: Path) -> None:
    parser = _parser()
    commands = _subcommands(parser)
    wrong = []
    for piece in _code(page):
        for words in _invocations(piece):
            if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
                continue  # `otel-perf --version`, `otel-perf SEVERITY title` (an alert line)
            if words[0] not in commands:
                wrong.append(f"otel-perf {words[0]}: no such command")
                continue
            sub = commands[words[0]]
            rest = words[1:]
            nested = _subcommands(sub)
            if nested:
                if not rest:
                    continue  # the group itself: `otel-perf rig`
                if rest[0] not in nested:
                    wrong.append(f"otel-perf {' '.join(words)}: {words[0]} needs one of {sorted(nested)}")
                    continue
                sub, rest = nested[rest[0]], rest[1:]
            options = _options(sub)
            for word in rest:
                option = word.split("=", 1)[0]
                if option.startswith("-") and option not in options:
                    wrong.append(f"otel-perf {' '.join(words)}: no option {option}")
    assert not wrong, f"{page.name}: " + "; ".join(wrong)


def test_the_checks_catch_what_they_are_for() -> None:
    """The helpers above are not vacuous: each finds what it exists to find."""
    assert _invocations("PYTHONPATH=$(otel-perf sitecustomize) python main.py") == [["sitecustomize"]]
    assert _invocations("pip install 'otel-perf[stack]' && otel-perf rig up --analyzers 2") == [
        ["rig", "up", "--analyzers", "2"]
    ]
    assert _invocations("otel-perf LOW N+1 queries") == [["LOW", "N+1", "queries"]]
    assert _slug("Where analysis runs: `OTEL_PERF_MODE`") == "where-analysis-runs-otel_perf_mode"
    assert _slug("The sitecustomize drop-in (when the launch command can't change)") == (
        "the-sitecustomize-drop-in-when-the-launch-command-cant-change"
    )
    assert "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS" in _known_variables()
    assert "OTEL_PERF_N_PLUS_ONE_MIN_REPEAT" not in _known_variables()
    assert {"OTEL_PERF_ANALYZER_QUEUE_SPANS", "OTEL_PERF_JAEGER_BIN"} <= _known_variables()


def test_the_quick_start_app_prints_the_alert_the_page_shows(tmp_path: Path) -> None:
    """docs/quickstart.md's `main.py`, run under `opentelemetry-instrument uvicorn main:app` with no
    collector, prints the console alert the page promises."""
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    source = re.search(r"Save this as `main.py`.*?```python\n(.*?)```", text, re.S)
    assert source, "docs/quickstart.md lost its main.py"
    shown = re.search(r"^(otel-perf LOW N\+1 .*)\n  at (main\.py:\d+) .*\n  (fix: .*)$", text, re.M)
    assert shown, "docs/quickstart.md lost its example alert"
    workdir = tmp_path / "app"
    workdir.mkdir()
    (workdir / "main.py").write_text(source.group(1))
    app = start_app(
        workdir,
        "instrument",
        seed=False,
        command=[sys.executable, "-m", "uvicorn", "main:app", "--port", "{port}"],
        ready_path="/docs",
        # Nothing answers there: the page's situation, a first run with no collector.
        export={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
        env={"OTEL_PERF_ALERTS_FILE": ""},
    )
    try:
        app.get("/orders")
        log = wait_until(lambda: shown.group(3) in app.log() and app.log(), what="the console alert")
        for line in (shown.group(1), f"  at {shown.group(2)} ", f"  {shown.group(3)}"):
            assert line in log, f"{line!r} not in:\n{log[-4000:]}"
    finally:
        app.stop()
