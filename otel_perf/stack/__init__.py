"""The local stack: Go binaries built and cached by version, and the `otel-perf rig` that runs them."""
