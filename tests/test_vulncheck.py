"""The Go binaries' vulnerability check: the real govulncheck against the real local database.

A small Go program is built here against golang.org/x/text v0.3.7 and calls
``language.ParseAcceptLanguage``, the symbol of GO-2022-1059 (fixed in v0.3.8): the check must report
that advisory as *called*, with its fixed version, and not GO-2021-0113 (fixed in v0.3.7 itself).
govulncheck and the database are built once into the user cache (``scripts/test`` does it before the
tests), so each test here takes seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from otel_perf.stack import toolchain, vulncheck

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = README.parent

PROBE_MAIN = """\
package main

import (
	"fmt"
	"os"

	"golang.org/x/text/language"
)

func main() {
	tags, _, err := language.ParseAcceptLanguage(os.Getenv("ACCEPT_LANGUAGE"))
	fmt.Println(tags, err)
}
"""


def _quiet(name: str, message: str) -> None:
    pass


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Go binary with a reachable GO-2022-1059 (the proxy serves golang.org/x/text v0.3.7)."""
    src = tmp_path_factory.mktemp("probe")
    (src / "go.mod").write_text(
        "module example.com/vulnprobe\n\ngo 1.21\n\nrequire golang.org/x/text v0.3.7\n"
    )
    (src / "main.go").write_text(PROBE_MAIN)
    env = dict(os.environ, GOSUMDB="off", GOFLAGS="-mod=mod -buildvcs=false")
    proc = subprocess.run(
        ["go", "build", "-o", "probe", "."], cwd=src, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"building the probe failed:\n{proc.stderr}"
    return src / "probe"


def test_reachable_vulnerability_is_reported_as_called(probe: Path) -> None:
    report = vulncheck.run({"probe": probe}, progress=_quiet)
    (scan,) = report.binaries
    called = {f.id: f for f in scan.called}
    assert "GO-2022-1059" in called, vulncheck.text_summary(report)
    finding = called["GO-2022-1059"]
    assert (finding.module, finding.version, finding.fixed) == ("golang.org/x/text", "v0.3.7", "v0.3.8")
    assert "golang.org/x/text/language.ParseAcceptLanguage" in finding.symbols
    assert "GO-2022-1059" not in {f.id for f in scan.not_called}
    # Fixed in the very version the probe uses: the index's fixed versions must keep it out.
    assert "GO-2021-0113" not in {f.id for f in scan.findings}
    # x/text advisories in packages the probe never links (unicode/norm, secure/precis): present, not called.
    assert {"GO-2026-5970", "GO-2026-6629"} <= {
        f.id for f in scan.not_called if f.module == "golang.org/x/text"
    }
    assert report.db_version == vulncheck.VULNDB_VERSION
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", report.db_modified)

    text = vulncheck.markdown(report)
    called_table, other_table = text.split("**Called:**")[1].split("**Imported or required only:**")
    assert "| golang.org/x/text | v0.3.7 | probe | GO-2022-1059 | v0.3.8 |" in called_table
    assert "GO-2022-1059" not in other_table
    assert "GO-2022-1059" in vulncheck.text_summary(report)


def test_database_index_matches_its_entries() -> None:
    """The v1 layout govulncheck reads: each module's advisories, with the newest fixed version."""
    db = vulncheck.ensure_vulndb(_quiet)
    modules = {m["path"]: m["vulns"] for m in json.loads((db / "index" / "modules.json").read_text())}
    text_vulns = {v["id"]: v for v in modules["golang.org/x/text"]}
    assert text_vulns["GO-2022-1059"]["fixed"] == "0.3.8"
    assert text_vulns["GO-2021-0113"]["fixed"] == "0.3.7"
    entry = json.loads((db / "ID" / "GO-2022-1059.json").read_text())
    assert entry["affected"][0]["package"]["name"] == "golang.org/x/text"
    assert len(json.loads((db / "index" / "vulns.json").read_text())) == len(list((db / "ID").glob("*.json")))
    assert json.loads((db / "index" / "db.json").read_text())["modified"].startswith("2026-11-05")


def test_fixed_version_follows_reintroduction() -> None:
    """Mirrors osvutils.LatestFixed: a range re-introduced after its last fix has no fixed version."""
    assert vulncheck.latest_fixed(
        [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.3"}]}]
    ) == ("1.2.3")
    two_fixes = [
        {"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.9.0"}]},
        {"type": "SEMVER", "events": [{"introduced": "1.10.0-rc.1"}, {"fixed": "1.10.2"}]},
    ]
    assert vulncheck.latest_fixed(two_fixes) == "1.10.2"
    reintroduced = [
        {"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.0"}, {"introduced": "1.5.0"}]}
    ]
    assert vulncheck.latest_fixed(reintroduced) == ""
    assert vulncheck.latest_fixed(
        [{"type": "SEMVER", "events": [{"fixed": "1.0.0-rc.2"}, {"fixed": "1.0.0"}]}]
    ) == ("1.0.0")


def test_packages_are_attributed_to_their_own_module() -> None:
    """telemetrygen holds nested modules (go.opentelemetry.io/otel, .../otel/sdk, .../otel/sdk/metric).

    Stock govulncheck v1.9.0 gives each package the first prefix module in Go map order: findings then
    change from run to run and land under modules their advisory doesn't name. Ours takes the longest.
    """
    binary = toolchain.ensure_binary("telemetrygen", progress=_quiet)
    govulncheck, db = vulncheck.ensure_govulncheck(_quiet), vulncheck.ensure_vulndb(_quiet)
    cmd = [str(govulncheck), "-db", db.as_uri(), "-mode", "binary", "-format", "json", str(binary)]
    raw = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout
    messages = list(vulncheck._json_stream(raw))
    (sbom,) = [m["SBOM"] for m in messages if "SBOM" in m]
    module_paths = [m["path"] for m in sbom["modules"]]
    frames = [m["finding"]["trace"][0] for m in messages if "finding" in m]
    nested = [f for f in frames if f.get("package", "").startswith("go.opentelemetry.io/otel/sdk/")]
    assert nested, "telemetrygen no longer links the OpenTelemetry SDK: pick another nested-module binary"
    for frame in frames:
        if "package" not in frame or frame["module"] == "stdlib":
            continue
        package = frame["package"]
        owners = [p for p in module_paths if package == p or package.startswith(p + "/")]
        assert frame["module"] == max(owners, key=len), frame

    first = vulncheck.parse("telemetrygen", binary, raw)[0]
    again = vulncheck.scan("telemetrygen", binary, govulncheck, db)[0]
    assert first == again
    for finding in first.findings:
        entry = json.loads((db / "ID" / f"{finding.id}.json").read_text())
        assert finding.module in {a["package"]["name"] for a in entry["affected"]}, finding


def test_cli_exit_codes(tmp_path: Path) -> None:
    """Findings are listed with exit 0 (upstream releases we don't patch); a check that can't run is 2."""
    ok = subprocess.run(
        [sys.executable, "-m", "otel_perf.stack.vulncheck", "telemetrygen"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"^telemetrygen v0\.143\.0 .*: \d+ called, \d+ imported/required only$", ok.stdout, re.M)

    not_go = tmp_path / "not-go"
    not_go.write_text("#!/bin/sh\nexit 0\n")
    not_go.chmod(0o755)
    broken = subprocess.run(
        [sys.executable, "-m", "otel_perf.stack.vulncheck", "telemetrygen"],
        cwd=REPO,
        env=dict(os.environ, OTEL_PERF_TELEMETRYGEN_BIN=str(not_go)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert broken.returncode == vulncheck.EXIT_CANNOT_RUN, broken.stdout + broken.stderr
    assert "could not run" in broken.stderr and str(not_go) in broken.stderr

    no_go = subprocess.run(
        [sys.executable, "-m", "otel_perf.stack.vulncheck"],
        cwd=REPO,
        env=dict(
            os.environ, PATH=str(Path(sys.executable).parent), OTEL_PERF_BIN_DIR=str(tmp_path / "empty")
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert no_go.returncode == vulncheck.EXIT_CANNOT_RUN, no_go.stdout + no_go.stderr
    assert "go not found" in no_go.stderr


def test_readme_section_is_in_step_with_the_format() -> None:
    """The README's section is what ``--update-readme`` writes today (the findings themselves may age)."""
    match = re.search(
        re.escape(vulncheck.README_START) + r"\n(.*?)\n" + re.escape(vulncheck.README_END),
        README.read_text(),
        re.S,
    )
    assert match, "README lacks the govulncheck markers"
    body = match.group(1)
    regenerate = "regenerate: python -m otel_perf.stack.vulncheck --update-readme README.md"
    intro = body.split("\n", 1)[0]
    assert re.match(
        rf"Checked on \d{{4}}-\d{{2}}-\d{{2}} with govulncheck {vulncheck.GOVULNCHECK_VERSION}\b", intro
    ), regenerate
    assert f"`{vulncheck.VULNDB_MODULE}@{vulncheck.VULNDB_VERSION}`" in intro, regenerate
    assert vulncheck.COUNT_HEADER in body, regenerate
    for name in toolchain.BINARIES:
        assert re.search(
            rf"^\| {name} {re.escape(toolchain.VERSIONS[name])} \| go[\d.]+ \| \d+ \| \d+ \|$", body, re.M
        ), f"{name}: {regenerate}"
    for title in ("**Called:**", "**Imported or required only:**"):
        after = body.split(title, 1)[1].lstrip("\n")
        assert after.startswith((vulncheck.TABLE_HEADER, "none")), f"{title} {regenerate}"
    rows = [line for line in body.splitlines() if re.match(r"\| \S+ \| \S+ \| [a-z, ]+ \| GO-", line)]
    assert rows, regenerate
    for row in rows:
        assert row.count(" | ") == 4 and re.search(r"\| (GO-\d{4}-\d+(, )?)+ \|", row), row
    assert vulncheck.markdown(_report_dated_as(intro)).split("\n", 1)[0] == intro, regenerate


def _report_dated_as(intro: str) -> vulncheck.Report:
    """An empty report with the README's dates: its first line is the intro in today's wording."""
    dates = re.search(r"Checked on (\S+) with .*?\(entries up to (\S+?)\)", intro)
    assert dates, intro
    return vulncheck.Report(
        scanner=vulncheck.SCANNER,
        db_version=vulncheck.VULNDB_VERSION,
        db_modified=dates.group(2),
        scanned_on=dt.date.fromisoformat(dates.group(1)),
        binaries=(),
    )
