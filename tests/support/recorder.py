"""A real local HTTP server that records what it receives: the stand-in for a webhook endpoint
(Slack, PagerDuty, …), which is outside the product. It can also answer errors or hang."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay_s = 0.0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if recorder.delay_s:
                    time.sleep(recorder.delay_s)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = body.decode(errors="replace")
                recorder.requests.append({"path": self.path, "headers": dict(self.headers), "json": payload})
                self.send_response(recorder.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
