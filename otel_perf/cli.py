"""The `otel-perf` command.

Standard library only at the top (argparse): `otel-perf sitecustomize`, `analyze` and `settings`
work on the core install; `demo`, `analyzer` and `rig` need their extras and say which when one is
missing.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from otel_perf import __version__

if TYPE_CHECKING:
    from otel_perf.processors.tree import SpanNode
    from otel_perf.settings import Settings
    from otel_perf.stack.rig import Stack


class Exit(Exception):
    """Leave the command with this exit code (its message is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _say(message: str) -> None:
    print(message, file=sys.stderr)


_EXTRAS = {"demo": "demo", "analyzer": "analyzer", "rig": "stack"}


def _needs_extra(command: str, error: ImportError) -> Exit:
    extra = _EXTRAS[command]
    _say(
        f"otel-perf {command} needs the {extra!r} extra ({error.name} is not installed): "
        f"pip install 'otel-perf[{extra}]'"
    )
    return Exit(2)


def _checked_settings() -> Settings:
    """The settings, strictly: a command stops on a bad `OTEL_PERF_*` value with one line naming it
    (exit 2), never a traceback; unknown `OTEL_PERF_*` names are warned about (once)."""
    from otel_perf.errors import SettingsError
    from otel_perf.log_setup import ensure_stderr_logging
    from otel_perf.settings import Settings, warn_about_unknown_variables

    ensure_stderr_logging()
    warn_about_unknown_variables(os.environ)
    try:
        return Settings.from_env(strict=True)
    except SettingsError as error:
        _say(f"otel-perf: {error}")
        raise Exit(2) from None


def demo(args: argparse.Namespace) -> None:
    """Run the bundled FastAPI + SQLAlchemy shop under opentelemetry-instrument and show what was found."""
    try:
        from rich.console import Console

        from otel_perf.demo.runner import print_result, run_demo
    except ImportError as error:
        raise _needs_extra("demo", error) from None
    from otel_perf.errors import DemoError

    _checked_settings()  # the demo's app reads them too, where a bad one would only be a log line
    console = Console()
    try:
        result = run_demo(console, rounds=args.rounds, release=args.release, save=args.save)
    except OSError as error:
        _say(f"demo failed: can't write {error.filename}: {error.strerror}")
        raise Exit(1) from None
    except DemoError as error:
        _say(f"demo failed: {error}")
        raise Exit(1) from None
    except KeyboardInterrupt:  # Ctrl+C or SIGTERM: the shop is stopped and its directory removed
        _say("demo interrupted")
        raise Exit(130) from None
    print_result(console, result)
    if args.save is not None:
        console.print(
            f"The demo's traces as OTLP JSON lines: {args.save}   Analyse: otel-perf analyze {args.save}",
            soft_wrap=True,
        )
    if not result.alerts:
        _say("No findings arrived: otel-perf is not working in this environment.")
        raise Exit(1)


_SEVERITIES = ("low", "medium", "high", "critical")


def analyze(args: argparse.Namespace) -> None:
    """Analyse exported traces (OTLP JSON lines): alerts as JSON lines on stdout, progress on stderr.

    Exit status: 0 analysed; 1 malformed lines were skipped (the rest was analysed); 2 a usage or
    settings error, a file that can't be read or holds no OTLP trace line (nothing analysed);
    3 with --fail-on, an alert at or above that severity (3 wins over 1: both fail a CI step, and
    the last lines say which of the two happened)."""
    from otel_perf.errors import OtlpFormatError
    from otel_perf.offline import NoTraceLines, Progress, analyze_traces, read_trace_file

    settings = _checked_settings()
    problems: list[str] = []
    progress = Progress(sys.stderr)

    def say(message: str) -> None:
        progress.clear()
        _say(message)

    def report(error: OtlpFormatError) -> None:
        problems.append(str(error))
        if len(problems) <= 10:
            say(f"skipped {error}")

    traces: dict[int, list[SpanNode]] = {}
    for path in args.files:
        say(f"Reading {path}…")
        name = "<stdin>" if str(path) == "-" else str(path)
        try:
            with sys.stdin.buffer if str(path) == "-" else Path(path).open("rb") as stream:
                for trace_id, nodes in read_trace_file(stream, name, report, progress).items():
                    traces.setdefault(trace_id, []).extend(nodes)
        except OSError as error:
            say(f"otel-perf: can't read {path}: {error.strerror}")
            raise Exit(2) from None
        except NoTraceLines as error:
            say(f"otel-perf: {error}")
            raise Exit(2) from None
    spans = sum(len(nodes) for nodes in traces.values())
    say(f"Read {spans} spans in {len(traces)} traces from {len(args.files)} file(s).")
    alerts: list[dict[str, object]] = []
    for alert in analyze_traces(traces, settings, dedup=args.dedup, progress=progress):
        alerts.append(alert.to_json())
        progress.clear()
        sys.stdout.write(json.dumps(alerts[-1], separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()
    progress.clear()
    if args.summary:
        _print_summary(alerts)
    if problems:
        _say(f"{len(problems)} malformed line(s) skipped.")
    if args.fail_on is not None:
        threshold = _SEVERITIES.index(args.fail_on)
        failing = [alert for alert in alerts if _SEVERITIES.index(str(alert["severity"])) >= threshold]
        if failing:
            counts = ", ".join(
                f"{sum(alert['severity'] == level for alert in failing)} {level}"
                for level in reversed(_SEVERITIES[threshold:])
                if any(alert["severity"] == level for alert in failing)
            )
            _say(
                f"otel-perf analyze: failed (--fail-on {args.fail_on}): {len(failing)} alert(s) at "
                f"or above {args.fail_on} ({counts})."
            )
            raise Exit(3)
        _say(
            f"otel-perf analyze: passed (--fail-on {args.fail_on}): no alert at or above "
            f"{args.fail_on} ({len(alerts)} below)."
        )
    if problems:
        raise Exit(1)


def _print_summary(alerts: list[dict[str, object]]) -> None:
    """A table of the alerts on stderr (rich where installed, plain lines otherwise)."""
    if not alerts:
        _say("No findings.")
        return
    try:
        from rich.console import Console

        from otel_perf.render import alerts_table
    except ImportError:
        _say(f"{len(alerts)} alert(s):")
        for alert in alerts:
            _say(f"  {str(alert['severity']).upper():<8} {alert['operation']}: {alert['title']}")
        return
    Console(stderr=True).print(alerts_table(alerts, title=f"{len(alerts)} alert(s)"))


def report(args: argparse.Namespace) -> None:
    """Write one self-contained HTML report (health, endpoints over time, trends, N+1 offenders, slow
    queries, resources) from alerts (JSON lines) and/or exported traces (OTLP JSON lines): without
    --alerts, the traces are analysed as `otel-perf analyze` does."""
    if not args.alerts and not args.traces:
        _say(
            "otel-perf report: nothing to report on: give --alerts FILE (alert JSON lines, e.g. "
            "OTEL_PERF_ALERTS_FILE or `otel-perf analyze` output) and/or --traces FILE (OTLP JSON lines)"
        )
        raise Exit(2)
    from otel_perf.report import load, render, write

    settings = _checked_settings()
    try:
        inputs = load(args.alerts or [], args.traces or [], settings, _say)
    except OSError as error:
        _say(f"otel-perf report: can't read {error.filename}: {error.strerror}")
        raise Exit(2) from None
    page = render(inputs, settings, top=args.top)
    try:
        write(args.output, page)
    except OSError as error:
        _say(f"otel-perf report: can't write {args.output}: {error.strerror}")
        raise Exit(2) from None
    _say(f"Wrote {args.output} ({len(page.encode()) // 1024} KiB).")
    if inputs.problems:
        _say(f"{len(inputs.problems)} malformed line(s) skipped.")
        raise Exit(1)


def analyzer(args: argparse.Namespace) -> None:
    """Run the collector-side analyzer: OTLP in (from the collector's groupbytrace), whole traces
    analysed, traces and alerts back to the collector. Settings: OTEL_PERF_ANALYZER_* and the rest."""
    try:
        from otel_perf.analyzer.server import Analyzer
    except ImportError as error:
        raise _needs_extra("analyzer", error) from None
    from otel_perf.errors import SettingsError
    from otel_perf.processors.analysis import build_detectors

    settings = _checked_settings()  # a server stops on a bad value rather than run on a default
    for variable, endpoint in (
        ("OTEL_PERF_ANALYZER_GRPC_ENDPOINT", settings.analyzer.grpc_endpoint),
        ("OTEL_PERF_ANALYZER_HTTP_ENDPOINT", settings.analyzer.http_endpoint),
    ):
        problem = _cannot_listen(endpoint)
        if problem:
            _say(f"otel-perf: {variable}={endpoint!r}: can't listen there ({problem})")
            raise Exit(2)
    try:
        Analyzer(
            settings.analyzer,
            detectors=build_detectors(settings.detectors),
            router=settings.router,
            sinks=settings.sinks,
            analyses=settings.processor.analyses_in_collector,
            skip_marked=settings.processor.mode == "both",
            monitor=settings.monitor,
            monitors=settings.monitors,
        ).serve()
    except OSError as error:  # an endpoint it can't listen on (taken, no such address)
        _say(f"otel-perf analyzer: {error}")
        raise Exit(1) from None
    except SettingsError as error:  # a token or TLS file it can't use (checked before anything starts)
        _say(f"otel-perf analyzer: {error}")
        raise Exit(2) from None


def _cannot_listen(endpoint: str) -> str | None:
    """Why `host:port` can't be listened on (no such address, taken), or None: said here in one line
    naming the variable, where the servers would say it in a traceback or a line of their own."""
    import socket

    host, _, port = endpoint.rpartition(":")
    try:
        family, kind, _, _, address = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            probe.bind(address)
    except OSError as error:
        return error.strerror or str(error)
    return None


def rig_up(args: argparse.Namespace) -> None:
    """Build what is missing, then start the stack on the standard ports (OTLP 4317/4318, Jaeger 16686,
    Alertmanager 9093)."""
    try:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

        from otel_perf.stack.rig import Stack, default_state_dir
    except ImportError as error:
        raise _needs_extra("rig", error) from None
    from otel_perf.errors import RigError, ToolchainError

    _checked_settings()  # passed on to the analyzers, which would stop on a bad one
    stack = Stack(args.state_dir or default_state_dir(), analyzers=args.analyzers)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def report(name: str, message: str) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{name}: {message}")
            progress.update(tasks[name], description=f"{name}: {message}")

        try:
            stack.build(report)
            stack.up(lambda service: report(service.name, "running"))
        except (ToolchainError, RigError) as error:
            _say(f"rig up failed: {error}")
            raise Exit(1) from None
    _print_status(stack)
    ports = stack.ports
    print(
        "\nSend your app's telemetry here:\n"
        f"  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{ports.otlp_grpc} "
        "opentelemetry-instrument python main.py"
    )
    print(
        f"Jaeger API: http://127.0.0.1:{ports.jaeger_query}/api/traces?service=<name>&tags=%7B%22perf.issue%22%3A%22n_plus_one%22%7D"
    )
    print(f"Alertmanager: http://127.0.0.1:{ports.alertmanager}/api/v2/alerts   Logs: {stack.state_dir}")


def _stack(args: argparse.Namespace) -> Stack:
    try:
        from otel_perf.stack.rig import Stack, default_state_dir
    except ImportError as error:
        raise _needs_extra("rig", error) from None
    return Stack.from_state(args.state_dir or default_state_dir())


def rig_status(args: argparse.Namespace) -> None:
    """What runs where."""
    if not _print_status(_stack(args)):
        raise Exit(3)


def rig_down(args: argparse.Namespace) -> None:
    """Stop every service of the stack; nothing is left running."""
    stack = _stack(args)
    stack.down()
    left = [status.name for status in stack.status() if status.running]
    if left:
        _say(f"still running: {', '.join(left)}")
        raise Exit(1)
    print("rig is down")


def _print_status(stack: Stack) -> bool:
    """A table of the services; True when all run and are healthy."""
    statuses = stack.status()
    rows = [("Service", "PID", "State", "Endpoint")]
    for status in statuses:
        state = "healthy" if status.healthy else ("unhealthy" if status.running else "stopped")
        rows.append((status.name, str(status.pid or "-"), state, status.endpoint))
    _print_table(rows)
    return all(status.healthy for status in statuses)


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def settings(args: argparse.Namespace) -> None:
    """Show every OTEL_PERF_* setting with its effective value (bad values are named on stderr)."""
    from otel_perf.settings import Settings, markdown_table, warn_about_unknown_variables

    if args.markdown:
        print(markdown_table())
        return
    from otel_perf.log_setup import ensure_stderr_logging

    ensure_stderr_logging()
    effective = Settings.from_env()
    warn_about_unknown_variables(os.environ)
    rows = [("Variable", "Value", "Meaning")]
    for section_name, section in Settings.sections():
        values = effective.section(section_name)
        for field, info in section.model_fields.items():
            value = getattr(values, field)
            rows.append(
                (section.env_name(field), str(getattr(value, "label", value)), info.description or "")
            )
    _print_table(rows)


def doctor(args: argparse.Namespace) -> None:
    """Say why otel-perf sees nothing or too much here: which instrumentations the launcher activates
    or skips, whether otel-perf's distro and configurator load, whether the collector answers, and
    what each OTEL_PERF_* variable does. Run it with the app's environment variables; exit 1 when
    something that matters is off."""
    from otel_perf.doctor import run

    code = run(as_json=args.json, show_all=args.all)
    if code:
        raise Exit(code)


def sitecustomize(args: argparse.Namespace) -> None:
    """Print the directory to prepend to PYTHONPATH: PYTHONPATH=$(otel-perf sitecustomize) python main.py"""
    import otel_perf.bootstrap

    print(Path(otel_perf.bootstrap.__file__).resolve().parent / "sitecustomize")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-perf",
        description="Performance monitoring for Python web services, built on OpenTelemetry. "
        "Run your app with `opentelemetry-instrument python main.py`; otel-perf does the rest.",
    )
    parser.add_argument("--version", action="version", version=f"otel-perf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str,
        run: Callable[[argparse.Namespace], None],
        parent: argparse._SubParsersAction[argparse.ArgumentParser] = commands,
    ) -> argparse.ArgumentParser:
        summary = " ".join((run.__doc__ or "").split()).split(": ")[0].split(". ")[0]
        sub = parent.add_parser(name, help=summary, description=run.__doc__)
        sub.set_defaults(run=run)
        return sub

    demo_parser = command("demo", demo)
    demo_parser.add_argument(
        "--rounds", type=int, default=3, help="How many times each endpoint is requested."
    )
    demo_parser.add_argument(
        "--save",
        type=Path,
        metavar="FILE",
        help="Write the shop's traces to FILE as OTLP JSON lines, for `otel-perf analyze FILE` "
        "(they go there instead of to OTEL_EXPORTER_OTLP_ENDPOINT).",
    )
    demo_parser.add_argument(
        "--release",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Restart the shop as release 1.1.0, whose search is slower, for the trend monitor (~20 s).",
    )
    analyze_parser = command("analyze", analyze)
    analyze_parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the exit statuses, as written
    analyze_parser.description = inspect.cleandoc(analyze.__doc__ or "")
    analyze_parser.add_argument(
        "files", nargs="+", help="OTLP JSON lines files (the collector's file exporter format); - for stdin."
    )
    analyze_parser.add_argument(
        "--fail-on",
        choices=_SEVERITIES,
        metavar="SEVERITY",
        help="Exit with status 3 when any alert is at or above SEVERITY (low, medium, high, "
        "critical): a CI gate.",
    )
    analyze_parser.add_argument(
        "--dedup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Apply the router's cooldown and rate limits, as live alerts do.",
    )
    analyze_parser.add_argument(
        "--summary",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Print a table of the alerts on stderr at the end.",
    )
    report_parser = command("report", report)
    report_parser.add_argument(
        "--alerts", action="append", metavar="FILE", help="Alert JSON lines (repeatable)."
    )
    report_parser.add_argument(
        "--traces", action="append", metavar="FILE", help="OTLP JSON lines, as `analyze` reads (repeatable)."
    )
    report_parser.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="The HTML file to write."
    )
    report_parser.add_argument(
        "--top", type=_at_least_one, default=10, help="How many N+1 offenders to list."
    )
    command("analyzer", analyzer)
    rig = commands.add_parser(
        "rig",
        help="The whole pipeline on loopback, without Docker: collector, analyzer, Jaeger, Alertmanager.",
    )
    rig_commands = rig.add_subparsers(dest="rig_command", metavar="COMMAND", required=True)
    for name, run in (("up", rig_up), ("status", rig_status), ("down", rig_down)):
        sub = command(name, run, rig_commands)
        sub.add_argument("--state-dir", type=Path, default=None, help="Where pids, logs and ports are kept.")
        if name == "up":
            sub.add_argument(
                "--analyzers",
                type=_at_least_one,
                default=1,
                help="Analyzer replicas behind the loadbalancing exporter.",
            )
    settings_parser = command("settings", settings)
    settings_parser.add_argument(
        "--markdown", action="store_true", help="Print the documentation table instead."
    )
    doctor_parser = command("doctor", doctor)
    doctor_parser.add_argument("--json", action="store_true", help="One JSON document, for machines.")
    doctor_parser.add_argument(
        "--all", action="store_true", help="List every setting, not only those set in the environment."
    )
    command("sitecustomize", sitecustomize)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        raise SystemExit(2)
    try:
        run(args)
    except Exit as leave:
        raise SystemExit(leave.code) from None


if __name__ == "__main__":
    main()
