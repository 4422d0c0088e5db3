"""The `otel-perf` command."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from otel_perf import __version__

if TYPE_CHECKING:
    from rich.progress import TaskID

    from otel_perf.processors.tree import SpanNode
    from otel_perf.stack.rig import Stack

app = typer.Typer(
    name="otel-perf",
    help="Performance monitoring for Python web services, built on OpenTelemetry.",
    no_args_is_help=True,
    add_completion=False,
)
stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"otel-perf {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Run your app with `opentelemetry-instrument python main.py`; otel-perf does the rest."""


@app.command()
def demo(
    rounds: Annotated[int, typer.Option(help="How many times each endpoint is requested.")] = 3,
) -> None:
    """Run the bundled FastAPI + SQLAlchemy shop under opentelemetry-instrument and show what was found."""
    from otel_perf.demo.runner import print_result, run_demo
    from otel_perf.errors import DemoError

    console = Console()
    try:
        result = run_demo(console, rounds=rounds)
    except DemoError as error:
        stderr.print(f"[red]demo failed:[/] {error}")
        raise typer.Exit(1) from None
    print_result(console, result)
    if not result.alerts:
        stderr.print("[red]No findings arrived: otel-perf is not working in this environment.[/]")
        raise typer.Exit(1)


@app.command()
def analyze(
    files: Annotated[
        list[Path],
        typer.Argument(help="OTLP JSON lines files (the collector's file exporter format); - for stdin."),
    ],
    dedup: Annotated[
        bool, typer.Option(help="Apply the router's cooldown and rate limits, as live alerts do.")
    ] = True,
    summary: Annotated[bool, typer.Option(help="Print a table of the alerts on stderr at the end.")] = True,
) -> None:
    """Analyse exported traces: alerts as JSON lines on stdout, progress on stderr."""
    from otel_perf.errors import OtlpFormatError, SettingsError
    from otel_perf.offline import analyze_traces, read_traces
    from otel_perf.render import alerts_table
    from otel_perf.settings import Settings

    try:
        settings = Settings.from_env(strict=True)
    except SettingsError as error:
        stderr.print(f"[red]otel-perf:[/] {error}")
        raise typer.Exit(2) from None
    problems: list[str] = []

    def report(error: OtlpFormatError) -> None:
        problems.append(str(error))
        if len(problems) <= 10:
            stderr.print(f"[yellow]skipped[/] {error}")

    traces: dict[int, list[SpanNode]] = {}
    with stderr.status("Reading traces…") as status:
        for path in files:
            status.update(f"Reading {path}…")
            try:
                with sys.stdin.buffer if str(path) == "-" else path.open("rb") as stream:
                    for trace_id, nodes in read_traces([stream], report).items():
                        traces.setdefault(trace_id, []).extend(nodes)
            except OSError as error:
                stderr.print(f"[red]otel-perf:[/] can't read {path}: {error.strerror}")
                raise typer.Exit(2) from None
    spans = sum(len(nodes) for nodes in traces.values())
    stderr.print(f"Read {spans} spans in {len(traces)} traces from {len(files)} file(s).")
    alerts: list[dict[str, object]] = []
    for alert in analyze_traces(traces, settings, dedup=dedup):
        alerts.append(alert.to_json())
        sys.stdout.write(json.dumps(alerts[-1], separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()
    if summary and alerts:
        stderr.print(alerts_table(alerts, title=f"{len(alerts)} alert(s)"))
    elif summary:
        stderr.print("No findings.")
    if problems:
        stderr.print(f"[yellow]{len(problems)} malformed line(s) skipped.[/]")
        raise typer.Exit(1)


@app.command()
def analyzer() -> None:
    """Run the collector-side analyzer: OTLP in (from the collector's groupbytrace), whole traces
    analysed, traces and alerts back to the collector. Settings: OTEL_PERF_ANALYZER_* and the rest."""
    from otel_perf.analyzer.server import Analyzer
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
    ).serve()


rig_app = typer.Typer(
    help="The whole pipeline on loopback, without Docker: collector, analyzer, Jaeger, Alertmanager."
)
app.add_typer(rig_app, name="rig")
StateDir = Annotated[Path | None, typer.Option(help="Where pids, logs and ports are kept.")]


@rig_app.command("up")
def rig_up(
    analyzers: Annotated[
        int, typer.Option(min=1, help="Analyzer replicas behind the loadbalancing exporter.")
    ] = 1,
    state_dir: StateDir = None,
) -> None:
    """Build what is missing, then start the stack on the standard ports (OTLP 4317/4318, Jaeger 16686,
    Alertmanager 9093)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from otel_perf.errors import RigError, ToolchainError
    from otel_perf.stack.rig import Stack, default_state_dir

    stack = Stack(state_dir or default_state_dir(), analyzers=analyzers)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=False) as progress:
        tasks: dict[str, TaskID] = {}

        def report(name: str, message: str) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{name}: {message}")
            progress.update(tasks[name], description=f"{name}: {message}")

        try:
            stack.build(report)
            stack.up(lambda service: report(service.name, "running"))
        except (ToolchainError, RigError) as error:
            stderr.print(f"[red]rig up failed:[/] {error}")
            raise typer.Exit(1) from None
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


@rig_app.command("status")
def rig_status(state_dir: StateDir = None) -> None:
    """What runs where."""
    from otel_perf.stack.rig import Stack, default_state_dir

    stack = Stack.from_state(state_dir or default_state_dir())
    if not _print_status(stack):
        raise typer.Exit(3)


@rig_app.command("down")
def rig_down(state_dir: StateDir = None) -> None:
    """Stop every service of the stack; nothing is left running."""
    from otel_perf.stack.rig import Stack, default_state_dir

    stack = Stack.from_state(state_dir or default_state_dir())
    stack.down()
    left = [status.name for status in stack.status() if status.running]
    if left:
        stderr.print(f"[red]still running:[/] {', '.join(left)}")
        raise typer.Exit(1)
    print("rig is down")


def _print_status(stack: Stack) -> bool:
    """A table of the services; True when all run and are healthy."""
    from rich.table import Table

    table = Table("Service", "PID", "State", "Endpoint")
    statuses = stack.status()
    for status in statuses:
        state = (
            "[green]healthy[/]"
            if status.healthy
            else ("[yellow]unhealthy[/]" if status.running else "[red]stopped[/]")
        )
        table.add_row(status.name, str(status.pid or "-"), state, status.endpoint)
    Console().print(table)
    return all(status.healthy for status in statuses)


@app.command()
def settings(
    markdown: Annotated[bool, typer.Option(help="Print the documentation table instead.")] = False,
) -> None:
    """Show every OTEL_PERF_* setting with its effective value (bad values are named on stderr)."""
    from rich.table import Table

    from otel_perf.settings import Settings, markdown_table, warn_about_unknown_variables

    if markdown:
        print(markdown_table())
        return
    from otel_perf.log_setup import ensure_stderr_logging

    ensure_stderr_logging()
    effective = Settings.from_env()
    warn_about_unknown_variables(os.environ)
    table = Table("Variable", "Value", "Meaning")
    for section_name, section in Settings.sections():
        values = effective.section(section_name)
        for field, info in section.model_fields.items():
            value = getattr(values, field)
            shown = str(getattr(value, "label", value))
            table.add_row(section.env_name(field), shown, info.description or "")
    Console().print(table)


@app.command()
def sitecustomize() -> None:
    """Print the directory to prepend to PYTHONPATH: PYTHONPATH=$(otel-perf sitecustomize) python main.py"""
    import otel_perf.bootstrap

    print(Path(otel_perf.bootstrap.__file__).resolve().parent / "sitecustomize")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
