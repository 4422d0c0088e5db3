"""One endpoint whose latency and error rate are set from outside, as a release would change them,
for the monitors (trend, error rate) to watch: `GET /items/{item_id}` sleeps APP_DELAY_MS and
answers 500 to an APP_ERROR_RATE share of requests. The version is the resource's
(OTEL_RESOURCE_ATTRIBUTES=service.version=…). Each answer names the process that served it (uvicorn
workers) and when. PORT when run as a script; under `uvicorn main:app` the server's flags decide.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

DELAY_S = float(os.environ.get("APP_DELAY_MS", "0")) / 1000
ERROR_RATE = float(os.environ.get("APP_ERROR_RATE", "0"))

app = FastAPI(title="versioned")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def item(item_id: int) -> JSONResponse:
    await asyncio.sleep(DELAY_S)
    failed = random.random() < ERROR_RATE
    body = {"item": item_id, "pid": os.getpid(), "at": time.time()}
    return JSONResponse(body, status_code=500 if failed else 200)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
