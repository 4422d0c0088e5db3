"""The `otel-perf` command.

Standard library only at the top (argparse): `otel-perf sitecustomize`, `analyze` and `settings`
work on the core install; `demo`, `analyzer` and `rig` need their extras and say which when one is
missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from otel_perf import __version__

if TYPE_CHECKING:
    from otel_perf.processors.tree import SpanNode
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


def demo(args: argparse.Namespace) -> None:
    """Run the bundled FastAPI + SQLAlchemy shop under opentelemetry-instrument and show what was found."""
    try:
        from rich.console import Console

        from otel_perf.demo.runner import print_result, run_demo
    except ImportError as error:
        raise _needs_extra("demo", error) from None
    from otel_perf.errors import DemoError

    console = Console()
    try:
        result = run_demo(console, rounds=args.rounds)
    except DemoError as error:
        _say(f"demo failed: {error}")
        raise Exit(1) from None
    print_result(console, result)
    if not result.alerts:
        _say("No findings arrived: otel-perf is not working in this environment.")
        raise Exit(1)


def analyze(args: argparse.Namespace) -> None:
    """Analyse exported traces: alerts as JSON lines on stdout, progress on stderr."""
    from otel_perf.errors import OtlpFormatError, SettingsError
    from otel_perf.offline import analyze_traces, read_traces
    from otel_perf.settings import Settings

    try:
        settings = Settings.from_env(strict=True)
    except SettingsError as error:
        _say(f"otel-perf: {error}")
        raise Exit(2) from None
    problems: list[str] = []

    def report(error: OtlpFormatError) -> None:
        problems.append(str(error))
        if len(problems) <= 10:
            _say(f"skipped {error}")

    traces: dict[int, list[SpanNode]] = {}
    for path in args.files:
        _say(f"Reading {path}…")
        try:
            with sys.stdin.buffer if str(path) == "-" else Path(path).open("rb") as stream:
                for trace_id, nodes in read_traces([stream], report).items():
                    traces.setdefault(trace_id, []).extend(nodes)
        except OSError as error:
            _say(f"otel-perf: can't read {path}: {error.strerror}")
            raise Exit(2) from None
    spans = sum(len(nodes) for nodes in traces.values())
    _say(f"Read {spans} spans in {len(traces)} traces from {len(args.files)} file(s).")
    alerts: list[dict[str, object]] = []
    for alert in analyze_traces(traces, settings, dedup=args.dedup):
        alerts.append(alert.to_json())
        sys.stdout.write(json.dumps(alerts[-1], separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()
    if args.summary:
        _print_summary(alerts)
    if problems:
        _say(f"{len(problems)} malformed line(s) skipped.")
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


def analyzer(args: argparse.Namespace) -> None:
    """Run the collector-side analyzer: OTLP in (from the collector's groupbytrace), whole traces
    analysed, traces and alerts back to the collector. Settings: OTEL_PERF_ANALYZER_* and the rest."""
    try:
        from otel_perf.analyzer.server import Analyzer
    except ImportError as error:
        raise _needs_extra("analyzer", error) from None
    from otel_perf.log_setup import ensure_stderr_logging
    from otel_perf.processors.analysis import build_detectors
    from otel_perf.settings import Settings, warn_about_unknown_variables

    ensure_stderr_logging()
    settings = Settings.from_env()
    warn_about_unknown_variables(os.environ)
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
    analyze_parser = command("analyze", analyze)
    analyze_parser.add_argument(
        "files", nargs="+", help="OTLP JSON lines files (the collector's file exporter format); - for stdin."
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
