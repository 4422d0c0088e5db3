"""Build and cache the Go binaries the tests and the local stack run: the one place versions are pinned.

Nothing here is downloaded as a prebuilt release: every binary is compiled from Go modules served by
the module proxy (that is what a fresh machine and CI can reach), once per version, into a user cache
directory, and reused afterwards. Users who already have a binary (e.g. the official Jaeger release,
which has the UI) point ``OTEL_PERF_<NAME>_BIN`` at it and nothing is built.

    python -m otel_perf.stack.toolchain [names...]        # build what is missing, print name<TAB>path
    python -m otel_perf.stack.toolchain --print-paths     # only print where they are / would be
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from otel_perf.errors import ToolchainError

__all__ = [
    "BINARIES",
    "OVERRIDE_ENV",
    "VERSIONS",
    "Binary",
    "Progress",
    "ToolchainError",
    "binary_path",
    "cache_dir",
    "collector_version",
    "ensure_binaries",
    "ensure_binary",
    "manifest_path",
    "read_manifest",
]

Binary = Literal["otelcol", "jaeger", "alertmanager", "telemetrygen"]
"""Names of the binaries this module provides."""

BINARIES: tuple[Binary, ...] = get_args(Binary)

Progress = Callable[[str, str], None]
"""``progress(name, message)``: called at each build step, so a CLI can show a live display."""

OVERRIDE_ENV: dict[Binary, str] = {name: f"OTEL_PERF_{name.upper()}_BIN" for name in BINARIES}
"""Environment variables naming a binary the user already has: used as-is, nothing is built."""

BIN_DIR_ENV = "OTEL_PERF_BIN_DIR"

# The builds themselves: module paths of what `go` compiles, per TOOLCHAIN.md.
OCB_MODULE = "go.opentelemetry.io/collector/cmd/builder"
JAEGER_MODULE = "github.com/jaegertracing/jaeger"
ALERTMANAGER_PACKAGE = "github.com/prometheus/alertmanager/cmd/alertmanager"
TELEMETRYGEN_PACKAGE = "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"

# Oldest Go that accepts every go.mod involved (Jaeger v1.76.0 says `go 1.24.6`).
MIN_GO = (1, 24)

_TAIL_LINES = 40
_MANIFEST_SECTIONS = ("receivers", "processors", "connectors", "exporters", "extensions")


# --------------------------------------------------------------------------------------------- manifest


def manifest_path() -> Path:
    """The ocb manifest: package data of ``otel_perf.collector`` (``collector/`` in a checkout)."""
    with contextlib.suppress(ModuleNotFoundError):
        packaged = resources.files("otel_perf.collector").joinpath("manifest.yaml")
        if packaged.is_file():
            return Path(str(packaged))
    # Running from a checkout without an (editable) install: the package dir is ./collector.
    return Path(__file__).resolve().parents[2] / "collector" / "manifest.yaml"


def read_manifest(path: Path | None = None) -> dict[str, Any]:
    """Parse the manifest (raises ToolchainError if it is missing or not a mapping)."""
    path = path or manifest_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolchainError(f"collector builder manifest not readable: {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("dist"), dict):
        raise ToolchainError(f"collector builder manifest {path} has no `dist:` section")
    return data


def manifest_modules(manifest: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(module path, version), ...]}`` for every component the manifest lists."""
    out: dict[str, list[tuple[str, str]]] = {}
    for section in _MANIFEST_SECTIONS:
        entries = []
        for entry in manifest.get(section) or []:
            parts = str(entry.get("gomod", "")).split()
            if len(parts) != 2:
                raise ToolchainError(
                    f"manifest {section} entry {entry!r}: expected `gomod: <module> <version>`"
                )
            entries.append((parts[0], parts[1]))
        out[section] = entries
    return out


def collector_version(manifest: Mapping[str, Any] | None = None) -> str:
    """The one version all manifest components share; it pins ocb too, so the two can't drift."""
    modules = manifest_modules(manifest if manifest is not None else read_manifest())
    versions = {version for entries in modules.values() for _, version in entries}
    if len(versions) != 1:
        raise ToolchainError(
            f"collector manifest mixes component versions {sorted(versions)}: ocb builds one release, "
            "so every component must be at the same version"
        )
    return versions.pop()


VERSIONS: dict[str, str] = {
    "otelcol": collector_version(),
    "ocb": collector_version(),
    "jaeger": "v1.76.0",  # Jaeger v2 binary, built from the module tag (see TOOLCHAIN.md)
    "alertmanager": "v0.31.1",  # v0.32+ modules lack the UI assets and don't build
    "telemetrygen": "v0.143.0",  # v0.144.0 is not served
}
"""Pinned versions. ``otelcol`` and ``ocb`` come from collector/manifest.yaml."""


# --------------------------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """Where built binaries live: ``$OTEL_PERF_BIN_DIR``, else ``$XDG_CACHE_HOME/otel-perf/bin``."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "otel-perf" / "bin"


def _manifest_hash() -> str:
    return hashlib.sha256(manifest_path().read_bytes()).hexdigest()[:8]


def cached_name(name: Binary) -> str:
    """File name in the cache: keyed by version (and, for the collector, by the manifest content)."""
    if name == "otelcol":
        dist = read_manifest()["dist"].get("name", "otelcol-perf")
        return f"{dist}-{VERSIONS['otelcol']}-{_manifest_hash()}"
    return f"{name}-{VERSIONS[name]}"


def _check_name(name: str) -> Binary:
    if name not in BINARIES:
        raise ToolchainError(f"unknown binary {name!r}: expected one of {', '.join(BINARIES)}")
    return name


def _override(name: Binary) -> Path | None:
    value = os.environ.get(OVERRIDE_ENV[name], "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if os.sep not in value and not path.exists() and (found := shutil.which(value)):
        path = Path(found)  # a bare command name on PATH, e.g. OTEL_PERF_JAEGER_BIN=jaeger
    return path


def binary_path(name: str) -> Path:
    """Where the binary is or would be after ``ensure_binary``: the override if set, else the cache."""
    binary = _check_name(name)
    return _override(binary) or cache_dir() / cached_name(binary)


def is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# --------------------------------------------------------------------------------------------- building


def stderr_progress(name: str, message: str) -> None:
    print(f"[toolchain] {name}: {message}", file=sys.stderr, flush=True)


def ensure_binary(name: str, progress: Progress | None = None) -> Path:
    """Return an executable for ``name``, building it into the cache first if it isn't there."""
    binary = _check_name(name)
    report = progress or stderr_progress
    override = _override(binary)
    if override is not None:
        var = OVERRIDE_ENV[binary]
        if not override.is_file():
            raise ToolchainError(f"{var}={os.environ[var]!r}: no such file (unset it to build {binary} here)")
        if not os.access(override, os.X_OK):
            raise ToolchainError(f"{var}={os.environ[var]!r}: not executable (chmod +x {override})")
        return override

    target = binary_path(binary)
    if is_executable(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock", binary, report):
        if is_executable(target):  # another process built it while we waited
            return target
        _sweep_leftovers(target)
        started = time.monotonic()
        report(binary, f"building {target.name} (not cached yet) into {target.parent}")
        _BUILDERS[binary](target, report)
        report(binary, f"built in {format_duration(time.monotonic() - started)}: {target}")
    return target


def ensure_binaries(names: Iterable[str] = BINARIES, progress: Progress | None = None) -> dict[str, Path]:
    """``ensure_binary`` for each name, in order (one at a time: Go builds already use every core)."""
    return {name: ensure_binary(name, progress) for name in names}


@contextlib.contextmanager
def locked(lock_file: Path, name: str, report: Progress) -> Iterator[None]:
    """Exclusive lock so two processes (e.g. parallel test runs) don't build the same binary at once."""
    with open(lock_file, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(name, f"waiting for another process building it (lock {lock_file})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def build_dir(target: Path) -> Iterator[Path]:
    """A scratch dir next to the target (same filesystem, so the final rename is atomic)."""
    path = Path(tempfile.mkdtemp(prefix=f".build-{target.name}-", dir=target.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _sweep_leftovers(target: Path) -> None:
    """Remove scratch dirs and staged files of builds that were killed (we hold the lock: none is live)."""
    for stale in (
        *target.parent.glob(f".build-{target.name}-*"),
        *target.parent.glob(f".{target.name}.tmp*"),
    ):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def install(built: Path, target: Path) -> None:
    """Move a finished binary into place atomically: readers see the old state or the whole file."""
    if not is_executable(built):
        raise ToolchainError(f"build reported success but produced no executable at {built}")
    staged = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.move(str(built), staged)
    staged.chmod(staged.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(staged, target)


def go_command() -> str:
    """The ``go`` executable, checked to be new enough for every go.mod we build."""
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "go not found on PATH: install Go >= {}.{} (https://go.dev/dl/), or point {} at binaries you "
            "already have".format(*MIN_GO, "/".join(OVERRIDE_ENV.values()))
        )
    try:
        raw = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ToolchainError(f"`{go} env GOVERSION` failed: {exc}") from exc
    match = re.match(r"go(\d+)\.(\d+)", raw.strip())
    if match and (int(match[1]), int(match[2])) < MIN_GO:
        raise ToolchainError(
            f"{go} is {raw.strip()}: install Go >= {MIN_GO[0]}.{MIN_GO[1]} (https://go.dev/dl/)"
        )
    return go


def go_env(**extra: str) -> dict[str, str]:
    """The user's environment (so GOPATH/GOMODCACHE/GOCACHE are reused) plus what our builds need.

    GOSUMDB=off: the checksum database can't be reached for many modules here (TOOLCHAIN.md); set
    for these subprocesses only. -buildvcs=false: the build dirs may sit inside a git checkout
    (e.g. OTEL_PERF_BIN_DIR=.otel-perf/bin), whose VCS state must not leak into or break the build.
    """
    env = dict(os.environ)
    env["GOSUMDB"] = "off"
    flags = env.get("GOFLAGS", "")
    if "-buildvcs" not in flags:
        env["GOFLAGS"] = f"{flags} -buildvcs=false".strip()
    env.update(extra)
    return env


def _run(name: Binary, cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path) -> str:
    """Run a build step; on failure raise with the command and the tail of its output."""
    command = shlex.join(str(c) for c in cmd)
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    chunks: list[str] = []
    with open(log, "a", encoding="utf-8") as log_file:
        log_file.write(f"$ (cd {cwd} && {command})\n")
        log_file.flush()
        try:
            proc = subprocess.Popen(
                list(cmd), cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as exc:
            raise ToolchainError(f"building {name}: could not run `{command}`: {exc}") from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            tail.append(line.rstrip("\n"))
            chunks.append(line)
        rc = proc.wait()
    if rc != 0:
        output = "\n".join(f"    {line}" for line in tail) or "    (no output)"
        raise ToolchainError(
            f"building {name} failed: `{command}` exited with status {rc} (in {cwd}).\n"
            f"Last {len(tail)} lines of output:\n{output}\n"
            f"Full log: {log}\n"
            f"Fix the cause and re-run `python -m otel_perf.stack.toolchain {name}`, or set "
            f"{OVERRIDE_ENV[name]} to a binary you already have."
        )
    return "".join(chunks)


def _log_file(target: Path) -> Path:
    logs = target.parent / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{target.name}.log"
    log.write_text("", encoding="utf-8")
    return log


def _ocb(report: Progress, log: Path) -> Path:
    """The collector builder at the manifest's version, installed into a private GOBIN in the cache."""
    version = VERSIONS["ocb"]
    tools = cache_dir() / "tools"
    ocb = tools / f"ocb-{version}"
    if is_executable(ocb):
        return ocb
    tools.mkdir(parents=True, exist_ok=True)
    report("otelcol", f"installing ocb {version} (go install {OCB_MODULE}@{version})")
    with build_dir(ocb) as gobin:
        _run(
            "otelcol",
            [go_command(), "install", f"{OCB_MODULE}@{version}"],
            cwd=gobin,
            env=go_env(GOBIN=str(gobin)),
            log=log,
        )
        install(gobin / "builder", ocb)
    return ocb


def _build_otelcol(target: Path, report: Progress) -> None:
    log = _log_file(target)
    ocb = _ocb(report, log)
    manifest = read_manifest()
    with build_dir(target) as work:
        manifest["dist"]["output_path"] = str(work / "dist")
        config = work / "manifest.yaml"
        config.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        report(
            "otelcol",
            "ocb: generating and compiling the collector (~3.5 min on a cold Go build cache, else seconds)",
        )
        _run("otelcol", [str(ocb), "--config", str(config)], cwd=work, env=go_env(), log=log)
        install(work / "dist" / str(manifest["dist"]["name"]), target)


def _build_jaeger(target: Path, report: Progress) -> None:
    # `go install .../cmd/jaeger@v` refuses modules whose go.mod has replace directives, so build
    # inside a writable copy of the downloaded module instead (the module cache is read-only).
    version = VERSIONS["jaeger"]
    log = _log_file(target)
    go = go_command()
    with build_dir(target) as work:
        report("jaeger", f"downloading {JAEGER_MODULE}@{version}")
        out = _run(
            "jaeger",
            [go, "mod", "download", "-json", f"{JAEGER_MODULE}@{version}"],
            cwd=work,
            env=go_env(),
            log=log,
        )
        try:
            module_dir = Path(json.loads(out)["Dir"])
        except (ValueError, KeyError) as exc:
            raise ToolchainError(
                f"building jaeger: unexpected `go mod download -json` output: {out[-2000:]}"
            ) from exc
        src = work / "src"
        shutil.copytree(module_dir, src, symlinks=True)
        for root, dirs, files in os.walk(src):
            for entry in (
                root,
                *(os.path.join(root, d) for d in dirs),
                *(os.path.join(root, f) for f in files),
            ):
                if not os.path.islink(entry):
                    os.chmod(entry, os.stat(entry).st_mode | stat.S_IWUSR)
        report("jaeger", "compiling ./cmd/jaeger (~3-5 min on a cold Go build cache, seconds when warm)")
        ldflags = f"-X {JAEGER_MODULE}/internal/version.latestVersion={version}"
        _run(
            "jaeger",
            [go, "build", "-ldflags", ldflags, "-o", str(work / "jaeger"), "./cmd/jaeger"],
            cwd=src,
            env=go_env(),
            log=log,
        )
        install(work / "jaeger", target)


def _go_install(name: Binary, package: str, ldflags: str = "") -> Callable[[Path, Progress], None]:
    """A builder running ``go install package@version``; ``ldflags`` may use ``{version}`` (no "v")."""

    def build(target: Path, report: Progress) -> None:
        version = VERSIONS[name]
        log = _log_file(target)
        flags = ["-ldflags", ldflags.format(version=version.removeprefix("v"))] if ldflags else []
        with build_dir(target) as gobin:
            report(name, f"go install {package}@{version}")
            _run(
                name,
                [go_command(), "install", *flags, f"{package}@{version}"],
                cwd=gobin,
                env=go_env(GOBIN=str(gobin)),
                log=log,
            )
            install(gobin / package.rsplit("/", 1)[-1], target)

    return build


_BUILDERS: dict[Binary, Callable[[Path, Progress], None]] = {
    "otelcol": _build_otelcol,
    "jaeger": _build_jaeger,
    # Without the -X, `alertmanager --version` prints an empty version (Prometheus sets it in its Makefile).
    "alertmanager": _go_install(
        "alertmanager", ALERTMANAGER_PACKAGE, "-X github.com/prometheus/common/version.Version={version}"
    ),
    "telemetrygen": _go_install("telemetrygen", TELEMETRYGEN_PACKAGE),
}


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Build what is missing (or with --print-paths only locate) and print ``name<TAB>path`` lines."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_perf.stack.toolchain",
        description="Build (once, cached by version) the Go binaries otel-perf's stack and tests use.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"binaries to provide (default: all of {', '.join(BINARIES)})",
    )
    parser.add_argument("--print-paths", action="store_true", help="only print where they are / would be")
    args = parser.parse_args(argv)
    if unknown := [n for n in args.names if n not in BINARIES]:
        parser.error(f"unknown binary {', '.join(unknown)}: choose from {', '.join(BINARIES)}")
    names: list[str] = list(dict.fromkeys(args.names)) or list(BINARIES)
    try:
        paths = {n: binary_path(n) for n in names} if args.print_paths else ensure_binaries(names)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
