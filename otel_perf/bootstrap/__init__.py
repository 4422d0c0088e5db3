"""How otel-perf gets into a process: the OpenTelemetry distro and configurator entry points
(picked up by `opentelemetry-instrument`) and the sitecustomize drop-in (for launch commands
that can't change)."""
