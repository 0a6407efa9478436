"""A small HTTP API for execution tests: counts every call (so a test can prove a side effect
ran once), answers JSON, fails on demand, and can hold a request until released.

- `POST|GET /effect/<name>` records the call under `name` and answers {"name", "calls"}.
- `GET /flaky/<name>` answers 503 for the first `fail_first[name]` calls, then 200.
- `GET /hold/<name>` sets `arrived[name]` and waits for `release[name]` (≤ 30 s).
- `GET /echo` answers the request's headers, query and body.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOLD_LIMIT_S = 30.0


@dataclass
class ApiServer:
    url: str = ""
    calls: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    fail_first: dict[str, int] = field(default_factory=dict)
    arrived: dict[str, threading.Event] = field(
        default_factory=lambda: defaultdict(threading.Event)
    )
    release: dict[str, threading.Event] = field(
        default_factory=lambda: defaultdict(threading.Event)
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> int:
        with self.lock:
            return len(self.calls[name])


def _handler(state: ApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            segments = [s for s in parts.path.split("/") if s]
            kind, name = [*segments, "", ""][:2]
            record = {
                "method": self.command,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                "body": body,
            }
            with state.lock:
                state.calls[name or kind].append(record)
                calls = len(state.calls[name or kind])
            if kind == "flaky" and calls <= state.fail_first.get(name, 0):
                self._send(503, {"error": "try later", "calls": calls})
            elif kind == "hold":
                state.arrived[name].set()
                state.release[name].wait(HOLD_LIMIT_S)
                self._send(200, {"name": name, "released": True})
            elif kind == "echo":
                self._send(200, record)
            elif kind == "text":
                self._send(200, "plain words", content_type="text/plain")
            elif kind == "missing":
                self._send(404, {"error": "no such thing"})
            else:
                pause = float(record["query"].get("ms", 0)) / 1000
                if pause:
                    threading.Event().wait(min(pause, HOLD_LIMIT_S))  # a slow API
                self._send(200, {"name": name, "calls": calls})

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def _send(self, status: int, document: Any, content_type: str = "application/json") -> None:
            data = (
                json.dumps(document).encode()
                if content_type.endswith("json")
                else str(document).encode()
            )
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the caller gave up (a cancelled or timed-out step)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_api_server() -> Iterator[ApiServer]:
    state = ApiServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="api-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        for event in list(state.release.values()):
            event.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
