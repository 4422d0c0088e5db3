"""otel-perf drop-in: `PYTHONPATH=$(otel-perf sitecustomize) python main.py` does what
`opentelemetry-instrument python main.py` does, for launch commands that can't change
(gunicorn/uwsgi units, PaaS start commands).

Python imports the first `sitecustomize` on its path, so this one first runs the next one on the
path (a project's or the distribution's, which would otherwise be hidden), then initialises
OpenTelemetry auto-instrumentation (with otel-perf's distro and configurator) once per process.
Child processes (uvicorn `--workers`, `--reload`) inherit PYTHONPATH and initialise themselves.
Nothing here may raise: a broken drop-in must not stop the application.
"""


def _run_next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    entries = [os.path.abspath(entry or os.getcwd()) for entry in sys.path]
    later = [sys.path[i] for i in range(len(entries)) if entries[i] != here and here in entries[:i]]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", later)
    if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _initialise() -> None:
    from opentelemetry import trace

    from otel_perf.bootstrap.configurator import already_configured

    # Launched under opentelemetry-instrument as well, or a chained sitecustomize set up its own
    # provider: don't configure a second time.
    if already_configured() or getattr(trace, "_TRACER_PROVIDER", None) is not None:
        return
    from opentelemetry.instrumentation.auto_instrumentation import initialize

    initialize()


try:
    _run_next_sitecustomize()
except Exception as error:
    import sys as _sys

    print(f"otel-perf: the chained sitecustomize failed: {error!r}", file=_sys.stderr)

try:
    _initialise()
except Exception as error:
    import sys as _sys

    print(f"otel-perf: initialisation failed, the app runs without it: {error!r}", file=_sys.stderr)
