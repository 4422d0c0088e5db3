"""Steady traffic for the demo shop, so Jaeger, Alertmanager and Grafana have something to show.

Requests every endpoint of `otel-perf demo` once per round (the N+1 ones and the healthy ones).
Settings: TARGET_URL (http://app:8000), INTERVAL_S between rounds (10).
"""

from __future__ import annotations

import os
import sys
import time

import httpx

from otel_perf.demo.runner import TRAFFIC

TARGET_URL = os.environ.get("TARGET_URL", "http://app:8000")
INTERVAL_S = float(os.environ.get("INTERVAL_S", "10"))


def main() -> None:
    with httpx.Client(base_url=TARGET_URL, timeout=30) as client:
        while True:
            for path, _ in TRAFFIC:
                try:
                    client.get(path)
                except httpx.HTTPError as error:
                    print(f"GET {path}: {error}", file=sys.stderr, flush=True)
            time.sleep(INTERVAL_S)


if __name__ == "__main__":
    main()
