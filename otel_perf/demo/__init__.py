"""The bundled demo shop and the runner behind `otel-perf demo`."""
