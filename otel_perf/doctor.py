"""`otel-perf doctor`: why otel-perf sees nothing, or too much, in the environment an app runs in.

Each check says what `opentelemetry-instrument` would do with this environment and these variables:
which instrumentations it activates and which it skips (and why: the launcher skips a library at a
version its instrumentation does not declare without a word at the default log level), whether
otel-perf's distro and configurator are the ones it loads, where telemetry would go and whether
anything answers there, and what each `OTEL_PERF_*` variable makes of the settings. It decides as
the launcher does (the same entry points, in the same order, the same dependency check), without
configuring anything: the only side effects are the instrumentations' imports and a TCP connect (an
empty OTLP/HTTP request) per endpoint.

A composition root, like `otel_perf.cli`: it reads the environment and the composed settings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from otel_perf import __version__
from otel_perf.bootstrap.checks import requirement_text
from otel_perf.bootstrap.collector import Endpoint, otlp_endpoints, probe
from otel_perf.bootstrap.distro import OTLP_DEFAULTS

OK, WARNING, PROBLEM, INFO = "ok", "warning", "problem", "info"
MARKS = {OK: "✓", WARNING: "!", PROBLEM: "✗", INFO: "·"}
SECTIONS = {
    "environment": "Environment",
    "instrumentations": "Instrumentations (what opentelemetry-instrument will trace)",
    "launcher": "Launcher",
    "export": "Export",
    "settings": "Settings",
}
CONNECT_TIMEOUT_S = 1.5
_SUBJECT_WIDTH = 40  # of the subject column; a longer subject pushes its own line's message
HTTP_TIMEOUT_S = 3.0

# What makes a trace: its root comes from a server or job framework, its calls from a database (or
# cache) client. With neither instrumented, otel-perf gets nothing to analyse.
FRAMEWORKS = frozenset(
    {
        "aiohttp-server",
        "asgi",
        "celery",
        "django",
        "falcon",
        "fastapi",
        "flask",
        "grpc_aio_server",
        "grpc_server",
        "pyramid",
        "starlette",
        "tornado",
        "wsgi",
    }
)
DATABASES = frozenset(
    {
        "aiopg",
        "aiosqlite",
        "asyncpg",
        "cassandra",
        "elasticsearch",
        "mysql",
        "mysqlclient",
        "psycopg",
        "psycopg2",
        "pymemcache",
        "pymongo",
        "pymssql",
        "pymysql",
        "redis",
        "sqlalchemy",
        "sqlite3",
        "tortoiseorm",
    }
)
# Database drivers whose instrumentation traces, inside SQLAlchemy's query span, the same query again.
DRIVERS = frozenset(
    {
        "aiopg",
        "aiosqlite",
        "asyncpg",
        "mysql",
        "mysqlclient",
        "psycopg",
        "psycopg2",
        "pymssql",
        "pymysql",
        "sqlite3",
    }
)
_OUR_ENTRY_POINT = "otel_perf"


@dataclass(frozen=True)
class Check:
    """One line of the report: a verdict (`status`) on `subject`, said in `message`."""

    section: str
    status: str
    subject: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "status": self.status,
            "subject": self.subject,
            "message": self.message,
            **self.data,
        }


@dataclass(frozen=True)
class Instrumentation:
    """An `opentelemetry_instrumentor` entry point and what the launcher does with it."""

    name: str
    distribution: str  # "opentelemetry-instrumentation-sqlalchemy 0.66b2"
    state: str  # active, disabled, not_installed, conflict, broken
    reason: str  # why not active ("" when active)
    libraries: tuple[str, ...] = ()  # the instrumented libraries found ("SQLAlchemy 2.0.58")


# --- instrumentations --------------------------------------------------------------------------


@contextmanager
def _muted() -> Iterator[None]:
    """No log line nor warning while imports and section loads run: the report says it all."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _disabled_instrumentations(environ: Mapping[str, str]) -> set[str]:
    """As the launcher splits `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`."""
    value = environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {name.strip() for name in value.split(",")} if value else set()


def _instrumented_libraries(dist: Any) -> tuple[str, ...]:
    """The installed libraries an instrumentation declares (`instruments`, `instruments-any`)."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    for line in getattr(dist, "requires", None) or ():
        if "instruments" not in line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or not any(
            requirement.marker.evaluate({"extra": extra}) for extra in ("instruments", "instruments-any")
        ):
            continue
        try:
            library = distribution(requirement.name)
        except PackageNotFoundError:
            continue
        found.append(f"{library.metadata['Name'] or requirement.name} {library.version}")
    return tuple(dict.fromkeys(found))


def _conflict_state(conflict: Any) -> tuple[str, str]:
    """(state, reason) of a `DependencyConflict` (any release of opentelemetry-instrumentation:
    the fields are the same from the floor, 0.61b0, on)."""
    required = getattr(conflict, "required", None)
    found = getattr(conflict, "found", None)
    required_any = list(getattr(conflict, "required_any", None) or ())
    found_any = list(getattr(conflict, "found_any", None) or ())
    if found:
        return "conflict", f"{found} is installed, but it instruments only {requirement_text(required)}"
    if found_any:
        wanted = " or ".join(requirement_text(each) for each in required_any)
        return "conflict", f"{', '.join(found_any)} installed, but it instruments only {wanted}"
    if required:
        return "not_installed", f"{requirement_text(required, name_only=True)} is not installed"
    if required_any:
        names = " or ".join(requirement_text(each, name_only=True) for each in required_any)
        return "not_installed", f"{names} {'is' if len(required_any) == 1 else 'are'} not installed"
    return "conflict", str(conflict)


def inspect_instrumentations(environ: Mapping[str, str]) -> list[Instrumentation]:
    """Every installed instrumentation, as `opentelemetry-instrument` would treat it here: the same
    entry points in the same order, `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`, the same dependency
    check on the distribution's declared `instruments` (the launcher skips a conflict, logging it at
    most at ERROR in recent releases and at DEBUG before), then the instrumentor's own
    `instrumentation_dependencies()` (a distribution with several instrumentors, e.g. httpx and
    httpx2, declares them together) and its import."""
    from opentelemetry.instrumentation.dependencies import (
        get_dependency_conflicts,
        get_dist_dependency_conflicts,
    )
    from opentelemetry.util._importlib_metadata import distributions, entry_points

    disabled = _disabled_instrumentations(environ)
    dists: dict[str, Any] | None = None
    found = []
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        dist = getattr(entry_point, "dist", None)
        if dist is None:  # as the launcher's _EntryPointDistFinder
            if dists is None:
                dists = {
                    f"{each.group}:{each.name}:{each.value}": candidate
                    for candidate in distributions()
                    for each in candidate.entry_points
                }
            dist = dists.get(f"{entry_point.group}:{entry_point.name}:{entry_point.value}")
        label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else entry_point.value
        libraries = _instrumented_libraries(dist)
        name = entry_point.name
        if "*" in disabled or name in disabled:
            found.append(
                Instrumentation(name, label, "disabled", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", libraries)
            )
            continue
        state, reason = "active", ""
        with _muted():
            try:
                conflict = get_dist_dependency_conflicts(dist) if dist is not None else None
                if conflict is None:
                    instrumentor = entry_point.load()()
                    conflict = get_dependency_conflicts(list(instrumentor.instrumentation_dependencies()))
                if conflict is not None:
                    state, reason = _conflict_state(conflict)
            except ModuleNotFoundError as error:
                state, reason = "not_installed", f"{error.name or error} is not installed"
            except ImportError as error:
                state, reason = "broken", f"its import fails ({error}); the launcher skips it"
            except Exception as error:  # the launcher re-raises these: its whole setup stops
                state, reason = "broken", f"it fails to load ({type(error).__name__}: {error})"
        found.append(Instrumentation(name, label, state, reason, libraries))
    return found


def _instrumentation_checks(found: list[Instrumentation], environ: Mapping[str, str]) -> list[Check]:
    checks = []
    active = {each.name for each in found if each.state == "active"}
    absent = []
    for each in found:
        data = {"state": each.state, "distribution": each.distribution, "libraries": list(each.libraries)}
        libraries = f" ({', '.join(each.libraries)})" if each.libraries else ""
        matters = each.name in FRAMEWORKS or each.name in DATABASES
        if each.state == "active":
            checks.append(Check("instrumentations", OK, each.name, f"active{libraries}", data))
        elif each.state == "not_installed":
            absent.append(each)
        elif each.state == "disabled":
            checks.append(
                Check(
                    "instrumentations",
                    INFO,
                    each.name,
                    "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
                    data,
                )
            )
        elif each.state == "conflict":
            fix = _CONFLICT_FIXES.get(
                each.name, "install a version it instruments, or a newer instrumentation"
            )
            checks.append(
                Check(
                    "instrumentations",
                    PROBLEM if matters else WARNING,
                    each.name,
                    f"skipped: {each.reason} ({each.distribution}), so opentelemetry-instrument leaves "
                    f"it out{_CONSEQUENCES.get(each.name, '')}. Fix: {fix}",
                    data,
                )
            )
        else:
            checks.append(
                Check(
                    "instrumentations",
                    PROBLEM if matters else WARNING,
                    each.name,
                    f"skipped: {each.reason}",
                    data,
                )
            )
    if absent:
        names = ", ".join(each.name for each in absent)
        checks.append(
            Check(
                "instrumentations",
                INFO,
                "not installed",
                f"nothing to instrument (library not installed): {names}",
                {"state": "not_installed", "names": [each.name for each in absent]},
            )
        )
    if "sqlalchemy" in active:
        drivers = sorted(active & DRIVERS)
        if drivers:
            disabled = sorted(_disabled_instrumentations(environ) - {""} | set(drivers))
            checks.append(
                Check(
                    "instrumentations",
                    WARNING,
                    "duplicate spans",
                    f"{', '.join(drivers)} instrumented beside sqlalchemy: each query SQLAlchemy runs "
                    "through these drivers appears twice (the ORM's span and, inside it, the driver's). "
                    "otel-perf counts it once, but your traces carry both. To keep the ORM's only: "
                    f"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS={','.join(disabled)}",
                    {"drivers": drivers},
                )
            )
    if not active & (FRAMEWORKS | DATABASES):
        checks.append(
            Check(
                "instrumentations",
                PROBLEM,
                "nothing to analyse",
                "no web framework and no database instrumentation is active: otel-perf gets no request "
                "nor query spans. Install the instrumentation of your framework or database "
                "(opentelemetry-bootstrap -a install lists them) in this environment",
            )
        )
    return checks


_CONSEQUENCES = {
    "sqlalchemy": ": no database query is traced, so N+1 and slow-query detection see nothing",
    "fastapi": ": no request is traced, so no trace is analysed",
    "httpx": ": no outgoing httpx call is traced",
    "requests": ": no outgoing requests call is traced",
}
_CONFLICT_FIXES = {"sqlalchemy": "pip install 'sqlalchemy<2.1'"}


# --- launcher ----------------------------------------------------------------------------------


def _entry_point_names(group: str) -> list[tuple[str, str]]:
    """(entry point name, distribution name) in the launcher's order."""
    from opentelemetry.util._importlib_metadata import entry_points

    names = []
    for entry_point in entry_points(group=group):
        dist = getattr(entry_point, "dist", None)
        names.append((entry_point.name, dist.metadata["Name"] if dist is not None else "?"))
    return names


def _launcher_checks(environ: Mapping[str, str]) -> tuple[list[Check], bool, bool]:
    """The distro and configurator `opentelemetry-instrument` loads (the rules of its `_load_distro`
    and `_load_configurators`); then whether the distro defaults exporters to OTLP (otel-perf's and
    opentelemetry-distro's do), and whether otel-perf's configurator is the one."""
    distros = _entry_point_names("opentelemetry_distro")
    wanted = environ.get("OTEL_PYTHON_DISTRO")
    chosen = next(((name, dist) for name, dist in distros if wanted is None or name == wanted), None)
    listing = ", ".join(f"{name} ({dist})" for name, dist in distros) or "none"
    data: dict[str, Any] = {
        "installed": [name for name, _ in distros],
        "loaded": chosen[0] if chosen else None,
    }
    distro_ours = chosen is not None and chosen[0] == _OUR_ENTRY_POINT
    chosen_distro = chosen
    if distro_ours:
        how = (
            "OTEL_PYTHON_DISTRO" if wanted else "the first installed" if len(distros) > 1 else "the only one"
        )
        distro = Check("launcher", OK, "distro", f"otel_perf is loaded ({how}; installed: {listing})", data)
    else:
        loaded = (
            f"{chosen[0]} ({chosen[1]}) is loaded, not otel_perf"
            if chosen
            else f"OTEL_PYTHON_DISTRO={wanted} names no installed distro, so a bare one is loaded"
        )
        distro = Check(
            "launcher",
            PROBLEM,
            "distro",
            f"{loaded} (installed: {listing}): otel-perf's defaults don't apply (OTLP export of traces, "
            "metrics and logs; the warning about skipped instrumentations). "
            "Fix: OTEL_PYTHON_DISTRO=otel_perf",
            data,
        )
    configurators = [name for name, _ in _entry_point_names("opentelemetry_configurator")]
    wanted = environ.get("OTEL_PYTHON_CONFIGURATOR")
    configured, said = _configurator_lines(configurators, wanted)
    data = {"installed": configurators, "loaded": configured, "sdk_says": said}
    listing = ", ".join(configurators) or "none"
    configurator_ours = configured == _OUR_ENTRY_POINT
    if configurator_ours:
        how = "OTEL_PYTHON_CONFIGURATOR" if wanted else "the first installed" if said else "the only one"
        others = (
            f"; the SDK's warning{'s' if len(said) > 1 else ''} {'; '.join(repr(line) for line in said)} "
            + (
                "only mean that the others are not used"
                if len(said) > 1
                else "only means that the other is not used"
            )
            if said
            else ""
        )
        configurator = Check(
            "launcher", OK, "configurator", f"otel_perf is loaded ({how}; installed: {listing}){others}", data
        )
    else:
        loaded = (
            f"{configured} is loaded, not otel_perf (the SDK says {said_about(said, _OUR_ENTRY_POINT)!r})"
            if configured
            else f"OTEL_PYTHON_CONFIGURATOR={wanted} names no installed configurator: the SDK is not set up"
        )
        configurator = Check(
            "launcher",
            PROBLEM,
            "configurator",
            f"{loaded} (installed: {listing}): no trace is analysed. Fix: OTEL_PYTHON_CONFIGURATOR=otel_perf",
            data,
        )
    otlp_defaults = distro_ours or (chosen_distro is not None and chosen_distro[1] == "opentelemetry-distro")
    return [distro, configurator], otlp_defaults, configurator_ours


def _configurator_lines(names: list[str], wanted: str | None) -> tuple[str | None, list[str]]:
    """(the configurator the launcher loads, the warnings it logs about the others), as its
    `_load_configurators` decides: the first one (or the one `OTEL_PYTHON_CONFIGURATOR` names)."""
    configured = None
    said = []
    for name in names:
        if configured is not None:
            said.append(f"Configuration of {name} not loaded, {configured} already loaded")
        elif wanted is None or wanted == name:
            configured = name
        else:
            said.append(
                f"Configuration of {name} not loaded because {wanted} is set by OTEL_PYTHON_CONFIGURATOR"
            )
    return configured, said


def said_about(lines: list[str], name: str) -> str:
    """The SDK's line about configurator `name` (among `_configurator_lines`)."""
    return next((line for line in lines if line.startswith(f"Configuration of {name} not loaded")), "")


def _launcher_script_check(environ: Mapping[str, str]) -> Check:
    """Whether `opentelemetry-instrument` on PATH is this environment's: another one runs the app
    with another environment's packages (and maybe without otel-perf)."""
    here = Path(sysconfig.get_path("scripts")) / "opentelemetry-instrument"
    on_path = shutil.which("opentelemetry-instrument", path=environ.get("PATH"))
    data = {"path": str(here), "on_path": on_path}
    if on_path is None:
        return Check(
            "environment",
            WARNING,
            "opentelemetry-instrument",
            f"not on PATH; this environment's is {here} (run it by that path, or activate the environment)",
            data,
        )
    if Path(on_path).resolve() != here.resolve():
        return Check(
            "environment",
            WARNING,
            "opentelemetry-instrument",
            f"on PATH is {on_path}, not this environment's ({here}): the app launched with it gets that "
            "environment's packages, which this report does not describe",
            data,
        )
    return Check("environment", OK, "opentelemetry-instrument", f"{on_path} (this environment's)", data)


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingValue:
    variable: str
    value: str  # as shown: secrets masked
    source: str  # env or default
    problem: str | None  # the line the app would log, when the value is invalid


def _shown_value(value: Any, secret: bool) -> str:
    value = getattr(value, "label", value)
    if secret and value is not None:
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        # Only an http(s) URL's host is no secret: Slack's Apprise URL has a token in its place.
        return safe_url(text) + "/***" if text.strip().lower().startswith(("http://", "https://")) else "***"
    if value is None:
        return "unset"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def effective_settings(environ: Mapping[str, str]) -> tuple[Any, list[SettingValue]]:
    """(the settings the app would run with, each variable's value and where it came from). A bad
    value is described with the line the app logs, and the default stands in for it, as in the app."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError as SourceError

    from otel_perf.processors.config import describe_errors
    from otel_perf.settings import Settings

    given = {name.upper(): value for name, value in environ.items() if value != ""}
    rows: dict[str, SettingValue] = {}
    loaded = {}
    for section_name, section in Settings.sections():
        problems: dict[str, str] = {}
        with _muted():
            try:
                values = section()
            except (ValidationError, SourceError) as error:
                problems = dict(describe_errors(section, error))
                values = section.load()  # the app's fallback: the defaults stand in
        loaded[section_name] = values
        for name, info in section.model_fields.items():
            variable = section.env_name(name)
            secret = "SecretStr" in str(info.annotation)
            problem = problems.get(name) or problems.get("")
            source = "env" if variable in given else "default"
            shown = (
                ("***" if secret else given[variable][:120])
                if problem and variable in given
                else _shown_value(getattr(values, name), secret)
            )
            if variable not in rows:
                rows[variable] = SettingValue(variable, shown, source, problem if source == "env" else None)
    return Settings.from_env(**cast(dict[str, Any], loaded)), list(rows.values())


def _settings_checks(rows: list[SettingValue], environ: Mapping[str, str], show_all: bool) -> list[Check]:
    from otel_perf.settings import unknown_variables

    checks = []
    for row in rows:
        data = {"variable": row.variable, "value": row.value, "source": row.source}
        if row.problem:
            checks.append(
                Check(
                    "settings",
                    PROBLEM,
                    row.variable,
                    f"{row.problem}; the app logs this and uses the default (otel-perf commands stop on it)",
                    {**data, "valid": False},
                )
            )
        elif row.source == "env":
            checks.append(Check("settings", OK, row.variable, f"{row.value} (env)", {**data, "valid": True}))
        elif show_all:
            checks.append(
                Check("settings", INFO, row.variable, f"{row.value} (default)", {**data, "valid": True})
            )
    for name, suggestion in unknown_variables(environ):
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        checks.append(
            Check(
                "settings",
                WARNING,
                name,
                f"not a setting otel-perf knows, so it has no effect{hint}",
                {"variable": name, "unknown": True, "suggestion": suggestion},
            )
        )
    return checks


_MODES = {
    "in_process": "traces are analysed in the app",
    "collector": "traces are analysed by otel-perf analyzer behind the collector; the app only exports them",
    "both": "traces are analysed in the app and by otel-perf analyzer behind the collector",
}


def _enabled_checks(settings: Any, environ: Mapping[str, str], configured: bool) -> list[Check]:
    processor = settings.processor
    data = {"enabled": processor.enabled, "mode": processor.mode}
    if not configured:  # said once, on the configurator's line
        return [Check("launcher", INFO, "otel-perf", "does not run: its configurator is not loaded", data)]
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return [
            Check(
                "launcher",
                PROBLEM,
                "otel-perf",
                "off: OTEL_SDK_DISABLED=true turns the whole SDK off (no span is made)",
                {**data, "sdk_disabled": True},
            )
        ]
    if not processor.enabled:
        return [
            Check(
                "launcher",
                PROBLEM,
                "otel-perf",
                "off: OTEL_PERF_ENABLED=false (plain OpenTelemetry runs; nothing is analysed)",
                data,
            )
        ]
    return [Check("launcher", OK, "otel-perf", f"on, mode {processor.mode}: {_MODES[processor.mode]}", data)]


# --- export ------------------------------------------------------------------------------------


def safe_url(url: str) -> str:
    """scheme://host:port of `url`: never its credentials, path or query (where tokens live)."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    host = f"[{host}]" if ":" in host else host
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{host}" + (f":{port}" if port else "")


def _otlp_http_url(environ: Mapping[str, str], signal: str) -> str:
    """The URL the SDK's OTLP/HTTP exporter posts `signal` to."""
    specific = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if specific:
        return specific
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    if "//" not in base:
        base = "http://" + base
    return base.rstrip("/") + f"/v1/{signal}"


def _otlp_headers(environ: Mapping[str, str], signal: str) -> dict[str, str]:
    """`OTEL_EXPORTER_OTLP[_<SIGNAL>]_HEADERS` (key=value,… URL-encoded), as the exporter sends them:
    an endpoint that needs a token answers 401 without it."""
    raw = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_HEADERS") or environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers = {}
    for pair in raw.split(","):
        key, _, value = pair.partition("=")
        if key.strip() and value.strip():
            headers[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return headers


def _post_empty_export(environ: Mapping[str, str], signal: str) -> str | None:
    """None when an empty OTLP/HTTP export request is accepted (HTTP 2xx), else why not."""
    url = _otlp_http_url(environ, signal)
    request = urllib.request.Request(
        url,
        data=b"",  # an empty Export<Signal>ServiceRequest: zero bytes of protobuf
        headers={"Content-Type": "application/x-protobuf", **_otlp_headers(environ, signal)},
        method="POST",
    )
    context = None
    if url.lower().startswith("https"):
        ca = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_CERTIFICATE") or environ.get(
            "OTEL_EXPORTER_OTLP_CERTIFICATE"
        )
        context = ssl.create_default_context(cafile=ca or None)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=context) as response:
            response.read()
    except urllib.error.HTTPError as error:
        hint = " (OTEL_EXPORTER_OTLP_HEADERS: a token?)" if error.code in (401, 403) else ""
        return f"it answers HTTP {error.code} to an OTLP export{hint}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return str(getattr(reason, "strerror", None) or reason).lower()
    return None


def _export_checks(settings: Any, environ: Mapping[str, str], otlp_defaults: bool) -> list[Check]:
    seen = {**OTLP_DEFAULTS, **environ} if otlp_defaults else dict(environ)
    endpoints = otlp_endpoints(seen)
    processor = settings.processor
    needs_collector = (
        processor.analyses_in_collector and environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
    )
    checks = []
    if "traces" not in endpoints:
        exporter = seen.get("OTEL_TRACES_EXPORTER") or ""
        shown = f"OTEL_TRACES_EXPORTER={exporter}" if exporter else "OTEL_TRACES_EXPORTER is unset"
        if processor.enabled and processor.mode == "collector":
            status, effect = (
                PROBLEM,
                "mode collector, so nothing analyses them. Fix: OTEL_TRACES_EXPORTER=otlp",
            )
        elif needs_collector:
            status, effect = WARNING, "only the app's own analysis runs (mode both)"
        else:
            status, effect = INFO, "they are analysed in the app only"
        checks.append(
            Check(
                "export",
                status,
                "traces",
                f"not exported over OTLP ({shown}): {effect}",
                {"exporter": exporter},
            )
        )
    groups: dict[tuple[str, str], list[str]] = {}
    by_key: dict[tuple[str, str], Endpoint] = {}
    for signal, endpoint in endpoints.items():
        key = (endpoint.protocol, endpoint.address)
        groups.setdefault(key, []).append(signal)
        by_key.setdefault(key, endpoint)
    for key, signals in groups.items():
        endpoint = by_key[key]
        subject = f"OTLP {endpoint.protocol} {endpoint.address}"
        problem = probe(endpoint, CONNECT_TIMEOUT_S)
        answer = f"no collector answers ({problem})"
        if problem is None and endpoint.protocol == "http":
            problem = _post_empty_export(seen, signals[0])
            answer = f"it accepts connections, but an empty OTLP/HTTP export fails ({problem})"
        data = {"protocol": endpoint.protocol, "address": endpoint.address, "signals": signals}
        what = ", ".join(signals)
        if problem is None:
            verb = "accepts an empty OTLP export" if endpoint.protocol == "http" else "accepts connections"
            checks.append(
                Check(
                    "export",
                    OK,
                    subject,
                    f"{what}: a collector answers ({verb})",
                    {**data, "reachable": True},
                )
            )
            continue
        if "traces" in signals and needs_collector:
            status = PROBLEM
            effect = (
                f"mode {processor.mode} needs a collector there: otel-perf analyzer behind it sees no trace"
            )
        else:
            status = WARNING
            effect = "nothing is exported there" + (
                " (otel-perf still analyses in the app)" if processor.analyses_in_process else ""
            )
        checks.append(
            Check(
                "export",
                status,
                subject,
                f"{what}: {answer}: {effect}. Fix: start one (otel-perf rig up), "
                "point OTEL_EXPORTER_OTLP_ENDPOINT at yours"
                + (", or analyse in the app only (OTEL_PERF_MODE=in_process)" if status == PROBLEM else ""),
                {**data, "reachable": False, "reason": problem},
            )
        )
    webhook = settings.sinks.webhook_url
    if webhook is not None:
        checks.append(_webhook_check(webhook.get_secret_value()))
    return checks


def _webhook_check(url: str) -> Check:
    """A TCP connect to the webhook's host (posting would send an alert). Shown without its path,
    query or credentials: a webhook URL is a secret."""
    shown = safe_url(url)
    data = {"address": shown}
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:  # a port out of range: the webhook sink says so at the first alert
        reason: str | None = "its port is not a number from 1 to 65535"
    else:
        reason = probe(Endpoint("alerts", "webhook", host, port), CONNECT_TIMEOUT_S)
    if reason is not None:
        return Check(
            "export",
            WARNING,
            f"webhook {shown}",
            f"does not answer ({reason}): alerts wait in the outbox and are retried",
            {**data, "reachable": False, "reason": reason},
        )
    return Check("export", OK, f"webhook {shown}", "accepts connections", {**data, "reachable": True})


# --- the report --------------------------------------------------------------------------------


def diagnose(environ: Mapping[str, str], *, show_all: bool = False) -> list[Check]:
    """Every check, in report order. `environ` is the app's environment; the settings are read from
    the process's (`OTEL_PERF_*` are read as the app reads them), so run it with the app's variables."""
    checks = [
        Check(
            "environment",
            INFO,
            "otel-perf",
            f"{__version__} in {sys.prefix} (Python {sys.version.split()[0]})",
            {"version": __version__, "prefix": sys.prefix},
        ),
        _launcher_script_check(environ),
    ]
    checks += _guarded(
        "instrumentations", lambda: _instrumentation_checks(inspect_instrumentations(environ), environ)
    )
    try:
        launcher, otlp_defaults, configurator_ours = _launcher_checks(environ)
    except Exception as error:
        launcher, otlp_defaults, configurator_ours = [_failed("launcher", error)], True, True
    checks += launcher
    try:
        settings, rows = effective_settings(environ)
    except Exception as error:  # what depends on the settings can't be said either
        return [*checks, _failed("settings", error)]
    checks += _guarded("launcher", lambda: _enabled_checks(settings, environ, configurator_ours))
    checks += _guarded("export", lambda: _export_checks(settings, environ, otlp_defaults))
    checks += _guarded("settings", lambda: _settings_checks(rows, environ, show_all))
    return checks


def _guarded(section: str, check: Callable[[], list[Check]]) -> list[Check]:
    """`check()`, or one ✗ line saying it could not be done: a broken third-party package (or a
    bug here) must not hide the rest of the report behind a traceback."""
    try:
        return check()
    except Exception as error:
        return [_failed(section, error)]


def _failed(section: str, error: Exception) -> Check:
    return Check(section, PROBLEM, "doctor", f"could not check this: {type(error).__name__}: {error}")


def exit_code(checks: list[Check]) -> int:
    """1 when something that matters is off (a ✗ line), else 0: warnings don't fail."""
    return 1 if any(check.status == PROBLEM for check in checks) else 0


def render_text(checks: list[Check], *, show_all: bool = False) -> str:
    lines = ["otel-perf doctor"]
    section = None
    width = 0
    for check in checks:
        if check.section != section:
            section = check.section
            title = SECTIONS[section]
            if section == "settings":
                title += " (all)" if show_all else " (set in the environment; --all for every one)"
            lines += ["", title]
            subjects = [len(each.subject) for each in checks if each.section == section]
            width = min(max(subjects), _SUBJECT_WIDTH)
        lines.append(f"  {MARKS[check.status]} {check.subject.ljust(width)}  {check.message}")
    if not any(check.section == "settings" for check in checks):
        lines += ["", SECTIONS["settings"], "  · every OTEL_PERF_* setting at its default (--all lists them)"]
    problems = sum(check.status == PROBLEM for check in checks)
    warned = sum(check.status == WARNING for check in checks)
    verdict = "nothing stands in otel-perf's way" if not problems else "fix the ✗ lines above"
    lines += ["", f"{problems} problem(s), {warned} warning(s): {verdict}."]
    return "\n".join(lines)


def render_json(checks: list[Check]) -> str:
    return json.dumps(
        {
            "ok": exit_code(checks) == 0,
            "exit_code": exit_code(checks),
            "problems": sum(check.status == PROBLEM for check in checks),
            "warnings": sum(check.status == WARNING for check in checks),
            "checks": [check.to_json() for check in checks],
        },
        indent=2,
        default=str,
    )


def run(*, as_json: bool = False, show_all: bool = False, out: TextIO | None = None) -> int:
    """The command: the report on `out` (stdout), the exit code returned."""
    checks = diagnose(os.environ, show_all=show_all)
    stream = out or sys.stdout
    stream.write((render_json(checks) if as_json else render_text(checks, show_all=show_all)) + "\n")
    stream.flush()
    return exit_code(checks)
