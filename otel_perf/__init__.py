"""otel-perf: performance monitoring for Python web services, built on OpenTelemetry."""

__version__ = "0.1.0"
