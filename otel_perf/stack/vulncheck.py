"""Check the Go binaries the toolchain builds against the Go vulnerability database, offline.

The binaries (collector, Jaeger, Alertmanager, telemetrygen) are third-party builds at pinned versions;
knowing which published advisories apply to them is part of shipping them. govulncheck and the
database are both taken from the Go module proxy, the one source a fresh machine and CI can reach:
``golang.org/x/vuln`` (govulncheck) and ``golang.org/x/vulndb``, whose module zip holds every entry as
OSV JSON (``data/osv``). From those we write the database's v1 layout (``index/*.json``,
``ID/<id>.json``) once per pinned version into the user cache, as upstream's ``cmd/indexdb`` does, and
run ``govulncheck -db file://... -mode binary`` on each binary.

Two flaws of govulncheck v1.9.0's binary mode are corrected, both visible with nested modules such as
``go.opentelemetry.io/otel``, ``.../otel/sdk`` and ``.../otel/sdk/metric``: it gives each package the
first prefix module in Go map order (so findings changed between runs; our build patches it to take
the longest prefix, as Go itself does), and it matches packages to vulnerable modules by bare string
prefix (``parse`` drops findings under a module their advisory does not name).

In binary mode a finding is *called* when a vulnerable symbol is linked into the binary (the linker
keeps only reachable code), else the vulnerable package is *imported* or only the module is
*required*. The result is a report, not a gate: we can't patch upstream releases, so findings exit 0
and are listed (and written to the README); only a check that could not run exits 2.

    python -m otel_perf.stack.vulncheck                       # summary; exit 0, or 2 if it can't run
    python -m otel_perf.stack.vulncheck --markdown            # the README section's body
    python -m otel_perf.stack.vulncheck --update-readme README.md
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import hashlib
import json
import operator
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from otel_perf.errors import ToolchainError
from otel_perf.stack.toolchain import (
    BINARIES,
    VERSIONS,
    Progress,
    build_dir,
    cache_dir,
    cached_name,
    ensure_binaries,
    format_duration,
    go_command,
    go_env,
    install,
    is_executable,
    locked,
    stderr_progress,
)

__all__ = [
    "COUNT_HEADER",
    "EXIT_CANNOT_RUN",
    "GOVULNCHECK_BUILD",
    "GOVULNCHECK_VERSION",
    "README_END",
    "README_START",
    "SCANNER",
    "TABLE_HEADER",
    "VULNDB_MODULE",
    "VULNDB_VERSION",
    "BinaryScan",
    "Finding",
    "Report",
    "build_db",
    "ensure_govulncheck",
    "ensure_vulndb",
    "govulncheck_path",
    "latest_fixed",
    "main",
    "markdown",
    "parse",
    "run",
    "scan",
    "text_summary",
    "update_readme",
    "vulndb_path",
]

GOVULNCHECK_MODULE = "golang.org/x/vuln"
GOVULNCHECK_PACKAGE = "golang.org/x/vuln/cmd/govulncheck"
GOVULNCHECK_VERSION = "v1.9.0"
VULNDB_MODULE = "golang.org/x/vulndb"
VULNDB_VERSION = "v0.0.0-20261105234957-e22db6528018"
"""Pinned: the same versions give the same findings, so the README's table is reproducible."""

SCANNER = f"govulncheck {GOVULNCHECK_VERSION}"
EXIT_CANNOT_RUN = 2
README_START = "<!-- govulncheck:start -->"
README_END = "<!-- govulncheck:end -->"

Level = Literal["called", "imported", "required"]
_LEVEL_ORDER: dict[Level, int] = {"called": 0, "imported": 1, "required": 2}
_TAIL_LINES = 40
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as OSV entries without a date carry
_MAX_SYMBOLS = 3


# --------------------------------------------------------------------------------------------- semver


def _semver_key(version: str) -> tuple[Any, ...] | None:
    """Sort key of a Go-style semver ("1.2.3", "v1.2.3-rc.1", "go1.22"); None if it isn't one.

    Mirrors golang.org/x/mod/semver: build metadata is ignored, a pre-release sorts before its release.
    """
    match = re.fullmatch(
        r"v?(?:go)?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
        r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?",
        version,
    )
    if match is None:
        return None
    major, minor, patch, pre, build = match.groups()
    if (minor is None or patch is None) and (pre or build):
        return None  # the shorthands v1 and v1.2 take no pre-release or build suffix
    numbers = (int(major), int(minor or 0), int(patch or 0))
    if not pre:
        return (*numbers, 1, ())
    idents: list[tuple[int, int, str]] = []
    for ident in pre.split("."):
        if ident.isdigit():
            if len(ident) > 1 and ident[0] == "0":
                return None  # numeric identifiers take no leading zeros
            idents.append((0, int(ident), ""))
        else:
            idents.append((1, 0, ident))
    return (*numbers, 0, tuple(idents))


def _less(a: str, b: str) -> bool:
    """``semver.Compare(a, b) < 0``: an invalid (or empty) version sorts before every valid one."""
    ka, kb = _semver_key(a), _semver_key(b)
    if kb is None:
        return False
    return ka is None or ka < kb


def latest_fixed(ranges: Iterable[Mapping[str, Any]]) -> str:
    """The version from which no SEMVER range is affected any more, "" if none (osvutils.LatestFixed)."""
    latest = ""
    for rng in ranges:
        if rng.get("type") != "SEMVER":
            continue
        events = rng.get("events") or []
        for event in events:
            fixed = event.get("fixed", "")
            if fixed and _less(latest, fixed):
                latest = fixed
        for event in events:
            introduced = event.get("introduced", "")
            if introduced and introduced != "0" and _less(latest, introduced):
                latest = ""  # re-introduced after the last fix: no fixed version
                break
    return latest


# --------------------------------------------------------------------------------------------- database


def _snapshot_time(pseudo_version: str) -> dt.datetime:
    """The commit time a Go pseudo-version carries (``v0.0.0-YYYYMMDDhhmmss-hash``), in UTC."""
    match = re.search(r"-(?:0\.)?(\d{14})-[0-9a-f]{12}$", pseudo_version)
    if match is None:
        raise ToolchainError(f"{VULNDB_MODULE}@{pseudo_version} is not a pseudo-version with a commit time")
    return dt.datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)


def build_db(osv_dir: Path, out: Path, snapshot: dt.datetime) -> int:
    """Write the v1 database layout for the OSV entries in ``osv_dir`` into ``out``; return the count.

    The same index ``golang.org/x/vulndb/cmd/indexdb`` writes (without its .gz copies, which only the
    HTTP client reads). The entries in the module zip carry no dates (upstream sets them from git
    history), so ``index/db.json``'s ``modified``, which govulncheck reports as the database's date,
    is the snapshot's commit time when no entry is newer.
    """
    ids = out / "ID"
    ids.mkdir(parents=True)
    modules: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    vulns: list[dict[str, Any]] = []
    newest = snapshot
    for path in sorted(osv_dir.glob("*.json")):
        raw = path.read_bytes()
        try:
            entry = json.loads(raw)
            vuln_id, modified = str(entry["id"]), str(entry.get("modified", _ZERO_TIME))
            entry_time = dt.datetime.fromisoformat(modified.replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ToolchainError(f"vulnerability database entry {path} is not OSV JSON: {exc}") from exc
        if path.name != f"{vuln_id}.json":
            raise ToolchainError(f"vulnerability database entry {path} has id {vuln_id!r}")
        newest = max(newest, entry_time)
        vulns.append(
            {"id": vuln_id, "modified": modified, **({"aliases": a} if (a := entry.get("aliases")) else {})}
        )
        for affected in entry.get("affected") or []:
            item = {"id": vuln_id, "modified": modified}
            if fixed := latest_fixed(affected.get("ranges") or []):
                item["fixed"] = fixed
            modules[str(affected["package"]["name"])].append(item)
        (ids / path.name).write_bytes(raw)
    if not vulns:
        raise ToolchainError(
            f"no OSV entries (*.json) in {osv_dir}: is {VULNDB_MODULE} laid out differently?"
        )
    index = out / "index"
    index.mkdir()
    _write_json(index / "db.json", {"modified": newest.strftime("%Y-%m-%dT%H:%M:%SZ")})
    module_index: list[dict[str, object]] = []
    for mod, items in sorted(modules.items()):
        module_index.append({"path": mod, "vulns": sorted(items, key=operator.itemgetter("id"))})
    _write_json(index / "modules.json", module_index)
    _write_json(index / "vulns.json", sorted(vulns, key=lambda v: str(v["id"])))
    return len(vulns)


def _write_json(path: Path, value: object) -> None:
    """Compact, as Go's json.Marshal writes the index."""
    path.write_text(json.dumps(value, separators=(",", ":")), encoding="utf-8")


def vulndb_path() -> Path:
    """Where the database for the pinned vulndb version is or will be (a directory in the cache)."""
    return cache_dir() / f"vulndb-{VULNDB_VERSION}"


# govulncheck's binary mode gives every package the *first* module, in Go map order, whose path is a
# prefix of the package path (x/vuln internal/vulncheck/packages.go, findModule, marked "TODO: not
# first match, best match"). With nested modules (go.opentelemetry.io/otel, .../otel/sdk,
# .../otel/sdk/metric) a package lands in a random one: each run reports different advisories, some
# under a module they don't affect, and misses others. The fix takes the longest prefix, as Go does.
_FIND_MODULE_BUG = """\
	for _, m := range g.modules {
		//TODO: not first match, best match...
		if pkgPath == m.Path || strings.HasPrefix(pkgPath, m.Path+"/") {
			return m
		}
	}
	return g.GetModule(internal.UnknownModulePath)
"""
_FIND_MODULE_FIX = """\
	var best *packages.Module // the longest module path that prefixes pkgPath (patched by otel-perf)
	for _, m := range g.modules {
		prefix := pkgPath == m.Path || strings.HasPrefix(pkgPath, m.Path+"/")
		if prefix && (best == nil || len(m.Path) > len(best.Path)) {
			best = m
		}
	}
	if best != nil {
		return best
	}
	return g.GetModule(internal.UnknownModulePath)
"""
_PATCHED_FILE = "internal/vulncheck/packages.go"
GOVULNCHECK_BUILD = (
    f"{GOVULNCHECK_VERSION}+longest-module-"
    f"{hashlib.sha256((_FIND_MODULE_BUG + _FIND_MODULE_FIX).encode()).hexdigest()[:8]}"
)
"""What the cache key and the report name: the pinned release plus the findModule fix above."""


def govulncheck_path() -> Path:
    """Where the pinned (and patched) govulncheck is or will be."""
    return cache_dir() / "tools" / f"govulncheck-{GOVULNCHECK_BUILD}"


def _go_step(what: str, cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> str:
    """Run a go command; on failure raise with the command and the tail of its output."""
    command = shlex.join(str(c) for c in cmd)
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, env=dict(env), capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ToolchainError(f"{what}: could not run `{command}`: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(f"    {line}" for line in (proc.stderr + proc.stdout).splitlines()[-_TAIL_LINES:])
        raise ToolchainError(
            f"{what} failed: `{command}` exited with status {proc.returncode} (in {cwd}).\n"
            f"{tail or '    (no output)'}"
        )
    return proc.stdout


def _module_dir(what: str, module: str, version: str, work: Path) -> Path:
    """``go mod download`` a module version; return its (read-only) directory in the module cache."""
    out = _go_step(
        what, [go_command(), "mod", "download", "-json", f"{module}@{version}"], cwd=work, env=go_env()
    )
    try:
        return Path(json.loads(out)["Dir"])
    except (ValueError, KeyError) as exc:
        raise ToolchainError(f"{what}: unexpected `go mod download -json` output: {out[-2000:]}") from exc


def _writable_copy(src: Path, dst: Path) -> None:
    """Copy a module out of the read-only module cache so it can be patched and built."""
    shutil.copytree(src, dst, symlinks=True)
    for root, dirs, files in os.walk(dst):
        for entry in (root, *(os.path.join(root, n) for n in (*dirs, *files))):
            if not os.path.islink(entry):
                os.chmod(entry, os.stat(entry).st_mode | stat.S_IWUSR)


def ensure_govulncheck(progress: Progress | None = None) -> Path:
    """The pinned govulncheck with the findModule fix, built once into the cache's tools directory."""
    report = progress or stderr_progress
    target = govulncheck_path()
    if is_executable(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock", "govulncheck", report):
        if is_executable(target):
            return target
        started = time.monotonic()
        report("govulncheck", f"building {GOVULNCHECK_PACKAGE}@{GOVULNCHECK_VERSION} with the findModule fix")
        with build_dir(target) as work:
            what = "building govulncheck"
            src = work / "src"
            _writable_copy(_module_dir(what, GOVULNCHECK_MODULE, GOVULNCHECK_VERSION, work), src)
            patched = src / _PATCHED_FILE
            code = patched.read_text(encoding="utf-8")
            if code.count(_FIND_MODULE_BUG) != 1:
                raise ToolchainError(
                    f"{what}: {GOVULNCHECK_MODULE}@{GOVULNCHECK_VERSION} {_PATCHED_FILE} no longer has the "
                    "findModule loop this module patches: re-check the fix against the new version"
                )
            patched.write_text(code.replace(_FIND_MODULE_BUG, _FIND_MODULE_FIX), encoding="utf-8")
            _go_step(
                what,
                [go_command(), "build", "-o", str(work / "govulncheck"), "./cmd/govulncheck"],
                cwd=src,
                env=go_env(),
            )
            install(work / "govulncheck", target)
        report("govulncheck", f"built in {format_duration(time.monotonic() - started)}: {target}")
    return target


def ensure_vulndb(progress: Progress | None = None) -> Path:
    """The local database for the pinned vulndb snapshot, built once (it appears whole or not at all)."""
    report = progress or stderr_progress
    target = vulndb_path()
    if (target / "index" / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock", "vulndb", report):
        if (target / "index" / "modules.json").is_file():
            return target
        started = time.monotonic()
        report("vulndb", f"downloading {VULNDB_MODULE}@{VULNDB_VERSION} (~25 MB)")
        with build_dir(target) as work:
            module_dir = _module_dir(
                "downloading the Go vulnerability database", VULNDB_MODULE, VULNDB_VERSION, work
            )
            count = build_db(module_dir / "data" / "osv", work / "db", _snapshot_time(VULNDB_VERSION))
            os.replace(work / "db", target)
        report(
            "vulndb", f"{count} entries indexed in {format_duration(time.monotonic() - started)}: {target}"
        )
    return target


# --------------------------------------------------------------------------------------------- scanning


@dataclasses.dataclass(frozen=True)
class Finding:
    """One advisory in one module of one binary, at the most precise level govulncheck found it."""

    id: str
    module: str
    version: str
    fixed: str
    level: Level
    symbols: tuple[str, ...]
    summary: str
    aliases: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BinaryScan:
    """What govulncheck reported for one binary."""

    name: str
    path: Path
    go_version: str
    main_version: str
    findings: tuple[Finding, ...]

    @property
    def called(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "called")

    @property
    def not_called(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level != "called")


@dataclasses.dataclass(frozen=True)
class Report:
    """A scan of several binaries with one govulncheck and database."""

    scanner: str
    db_version: str
    db_modified: str
    scanned_on: dt.date
    binaries: tuple[BinaryScan, ...]


def _json_stream(text: str) -> Iterator[dict[str, Any]]:
    """govulncheck -format json prints a stream of (indented) JSON objects, not one document."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        obj, pos = decoder.raw_decode(text, pos)
        if isinstance(obj, dict):
            yield obj


def _symbol(frame: Mapping[str, Any]) -> str:
    receiver = str(frame.get("receiver", "")).lstrip("*")
    function = str(frame["function"])
    return f"{frame.get('package', '')}.{receiver + '.' if receiver else ''}{function}"


@dataclasses.dataclass
class _Seen:
    version: str
    fixed: str
    level: Level
    symbols: set[str]


def parse(name: str, path: Path, output: str) -> tuple[BinaryScan, dict[str, str]]:
    """Turn govulncheck's JSON stream into a BinaryScan (and its config message).

    govulncheck reports one finding per vulnerable symbol or package; they are merged per advisory and
    module at the most precise level. A finding under a module its advisory does not name is dropped:
    binary mode matches packages to vulnerable modules by bare string prefix, so packages of
    ``go.opentelemetry.io/otel/sdk/metric`` get the advisories of ``go.opentelemetry.io/otel/sdk``.
    """
    config: dict[str, str] = {}
    entries: dict[str, Mapping[str, Any]] = {}
    sbom: Mapping[str, Any] = {}
    raw_findings: list[Mapping[str, Any]] = []
    try:
        for message in _json_stream(output):
            if "config" in message:
                config = {k: str(v) for k, v in message["config"].items()}
            elif "SBOM" in message:
                sbom = message["SBOM"]
            elif "osv" in message:
                entries[str(message["osv"]["id"])] = message["osv"]
            elif "finding" in message:
                raw_findings.append(message["finding"])
        if not config or not sbom:
            raise ToolchainError(
                f"govulncheck gave no config/SBOM message for {path}: not a Go binary with module info?"
            )
        findings = _merge(raw_findings, entries)
        main_module = (sbom.get("modules") or [{}])[0]
        scan_result = BinaryScan(
            name=name,
            path=path,
            go_version=str(sbom.get("go_version", "")),
            main_version=str(main_module.get("version", "")),
            findings=findings,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ToolchainError(f"govulncheck's output for {path} is not in the expected form: {exc!r}") from exc
    return scan_result, config


def _merge(
    raw_findings: Iterable[Mapping[str, Any]], entries: Mapping[str, Mapping[str, Any]]
) -> tuple[Finding, ...]:
    """One Finding per advisory and module, at its most precise level, with the called symbols."""
    found: dict[tuple[str, str], _Seen] = {}
    for finding in raw_findings:
        vuln_id, frame = str(finding["osv"]), finding["trace"][0]
        module = str(frame["module"])
        named = {
            str(a.get("package", {}).get("name")) for a in entries.get(vuln_id, {}).get("affected") or []
        }
        if module not in named:
            continue
        level: Level = (
            "called" if frame.get("function") else "imported" if frame.get("package") else "required"
        )
        seen = found.setdefault(
            (vuln_id, module),
            _Seen(str(frame.get("version", "")), str(finding.get("fixed_version", "")), level, set()),
        )
        if _LEVEL_ORDER[level] < _LEVEL_ORDER[seen.level]:
            seen.level = level
        if level == "called":
            seen.symbols.add(_symbol(frame))
    return tuple(
        sorted(
            (
                Finding(
                    id=vuln_id,
                    module=module,
                    version=seen.version,
                    fixed=seen.fixed,
                    level=seen.level,
                    symbols=tuple(sorted(seen.symbols)),
                    summary=str(entries[vuln_id].get("summary", "")),
                    aliases=tuple(entries[vuln_id].get("aliases") or ()),
                )
                for (vuln_id, module), seen in found.items()
            ),
            key=lambda f: (_LEVEL_ORDER[f.level], f.module, f.id),
        )
    )


def scan(name: str, binary: Path, govulncheck: Path, db: Path) -> tuple[BinaryScan, dict[str, str]]:
    """Run govulncheck in binary mode on one binary against the local database."""
    cmd = [str(govulncheck), "-db", db.resolve().as_uri(), "-mode", "binary", "-format", "json", str(binary)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"could not run `{shlex.join(cmd)}`: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(f"    {line}" for line in proc.stderr.splitlines()[-_TAIL_LINES:])
        raise ToolchainError(
            f"`{shlex.join(cmd)}` exited with status {proc.returncode}:\n{tail or '    (no output)'}"
        )
    return parse(name, binary, proc.stdout)


def run(
    binaries: Mapping[str, Path] | None = None,
    progress: Progress | None = None,
    today: dt.date | None = None,
) -> Report:
    """Scan ``binaries`` (default: every toolchain binary, built if missing) and collect the report."""
    report = progress or stderr_progress
    targets = dict(binaries) if binaries is not None else ensure_binaries(BINARIES, report)
    govulncheck = ensure_govulncheck(report)
    db = ensure_vulndb(report)
    scans = []
    config: dict[str, str] = {}
    for name, path in targets.items():
        result, config = scan(name, path, govulncheck, db)
        if result.main_version == "(devel)" and name in BINARIES and path == cache_dir() / cached_name(name):
            # Built in a local main module (ocb's output, Jaeger's module copy): the pin is the version.
            result = dataclasses.replace(result, main_version=VERSIONS[name])
        scans.append(result)
    return Report(
        scanner=SCANNER,
        db_version=VULNDB_VERSION,
        db_modified=config.get("db_last_modified", "")[:10],
        scanned_on=today or dt.date.today(),
        binaries=tuple(scans),
    )


# --------------------------------------------------------------------------------------------- output


def _go_version(module: str, version: str) -> str:
    """Versions as people write them: the standard library's ``v1.26.8`` is ``go1.26.8``."""
    if module in ("stdlib", "toolchain") and version.startswith("v"):
        return "go" + version[1:]
    return version


def _label(scan_result: BinaryScan) -> str:
    return f"{scan_result.name} {scan_result.main_version}".strip()


def text_summary(report: Report) -> str:
    """The console summary: per binary, the called advisories first, then the others."""
    lines = [
        f"{report.scanner} -mode binary, database {VULNDB_MODULE}@{report.db_version} "
        f"(as of {report.db_modified}), {report.scanned_on.isoformat()}",
    ]
    for scan_result in report.binaries:
        lines.append("")
        lines.append(
            f"{_label(scan_result)} ({scan_result.path}, built with {scan_result.go_version}): "
            f"{len(scan_result.called)} called, {len(scan_result.not_called)} imported/required only"
        )
        for f in scan_result.findings:
            fixed = _go_version(f.module, f.fixed) or "no fix"
            where = (
                f"  [{', '.join(f.symbols[:_MAX_SYMBOLS])}{', ...' if len(f.symbols) > _MAX_SYMBOLS else ''}]"
            )
            lines.append(
                f"  {f.level:<8} {f.id:<13} {f.module} {_go_version(f.module, f.version)} -> {fixed}: "
                f"{f.summary}{where if f.symbols else ''}"
            )
    return "\n".join(lines)


def _grouped(report: Report, called: bool) -> list[tuple[str, str, list[str], list[Finding]]]:
    """Rows of the README tables: ``(module, version, binaries, findings)``.

    Each advisory is merged across the binaries it applies to, then advisories of one module version
    found in the same binaries share a row: tens of rows instead of hundreds.
    """
    per_advisory: dict[tuple[str, str, str, str], tuple[Finding, list[str]]] = {}
    for scan_result in report.binaries:
        for f in scan_result.called if called else scan_result.not_called:
            per_advisory.setdefault((f.id, f.module, f.version, f.fixed), (f, []))[1].append(scan_result.name)
    rows: dict[tuple[str, str, tuple[str, ...]], list[Finding]] = collections.defaultdict(list)
    for f, names in per_advisory.values():
        rows[(f.module, f.version, tuple(names))].append(f)
    return [
        (module, version, list(names), sorted(findings, key=lambda f: f.id))
        for (module, version, names), findings in sorted(
            rows.items(), key=lambda item: (item[0][0] != "stdlib", item[0][0], item[0][2])
        )
    ]


def _fixed_in(module: str, findings: Sequence[Finding]) -> str:
    """The version that clears every advisory of a row, or which advisories have no fix yet."""
    unfixed = [f.id for f in findings if not f.fixed]
    if unfixed:
        return f"no fix yet for {', '.join(unfixed)}"
    newest = findings[0].fixed
    for f in findings[1:]:
        if _less(newest, f.fixed):
            newest = f.fixed
    return _go_version(module, newest)


COUNT_HEADER = "| binary | built with | called | imported or required only |\n| --- | --- | --- | --- |"
TABLE_HEADER = "| module | found | in | advisories | fixed in |\n| --- | --- | --- | --- | --- |"


def markdown(report: Report) -> str:
    """The README section's body (between the govulncheck markers)."""
    out = [
        f"Checked on {report.scanned_on.isoformat()} with {report.scanner} in binary mode against the Go "
        f"vulnerability database `{VULNDB_MODULE}@{report.db_version}` (entries up to "
        f"{report.db_modified}). *Called*: a vulnerable symbol is linked into the binary, so reachable; "
        "*imported or required only*: the vulnerable package or module is in it, its vulnerable symbols "
        "are not. Details of each advisory: `https://pkg.go.dev/vuln/<ID>`. Regenerate with "
        "`python -m otel_perf.stack.vulncheck --update-readme README.md`.",
        "",
        COUNT_HEADER,
    ]
    for s in report.binaries:
        out.append(f"| {_label(s)} | {s.go_version} | {len(s.called)} | {len(s.not_called)} |")
    for called, title in ((True, "Called"), (False, "Imported or required only")):
        rows = _grouped(report, called)
        out += ["", f"**{title}:**", ""]
        if not rows:
            out.append("none")
            continue
        out.append(TABLE_HEADER)
        for module, version, names, findings in rows:
            out.append(
                f"| {module} | {_go_version(module, version)} | {', '.join(names)} | "
                f"{', '.join(f.id for f in findings)} | {_fixed_in(module, findings)} |"
            )
    return "\n".join(out)


def update_readme(path: Path, body: str) -> None:
    """Replace what stands between the govulncheck markers in ``path`` with ``body``."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + r"\n(?:.*?\n)?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ToolchainError(f"{path} has no {README_START} ... {README_END} section")
    path.write_text(
        pattern.sub(lambda _: f"{README_START}\n{body}\n{README_END}", text, count=1), encoding="utf-8"
    )


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Scan, print; 0 when the check ran (findings or not), 2 when it could not run."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_perf.stack.vulncheck",
        description="Check the toolchain's Go binaries with govulncheck against a pinned, local Go "
        "vulnerability database. Exit 0 when the check ran (findings are listed, not fatal: the "
        "binaries are upstream releases), 2 when it could not run.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"binaries (default: all of {', '.join(BINARIES)})"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="print the README section's body instead")
    out.add_argument("--update-readme", metavar="FILE", type=Path, help="rewrite FILE's govulncheck section")
    args = parser.parse_args(argv)
    if unknown := [n for n in args.names if n not in BINARIES]:
        parser.error(f"unknown binary {', '.join(unknown)}: choose from {', '.join(BINARIES)}")
    names = list(dict.fromkeys(args.names)) or list(BINARIES)
    try:
        binaries = ensure_binaries(names)
        result = run(binaries)
        if args.update_readme:
            update_readme(args.update_readme, markdown(result))
            print(f"updated {args.update_readme}")
        else:
            print(markdown(result) if args.markdown else text_summary(result))
    except (ToolchainError, OSError) as exc:
        print(f"error: the vulnerability check could not run: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    return 0


if __name__ == "__main__":
    sys.exit(main())
