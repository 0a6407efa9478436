"""A small OpenAI-compatible chat-completions server for tests: the real wire protocol, with
deterministic answers.

`POST /v1/chat/completions` answers, in order: an injected failure (`fail(status, times)`),
a canned reply (`reply(text, ...)`), or an echo of the last user message (as
`{"echo": ...}` when the request asks for `response_format` `json_object`). Every request body
and its Authorization header are kept in `requests`. `hold()` makes the next request wait,
after setting `arrived`, until `release` is set: a way to catch a step mid-call without sleeps.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Longest a held request waits for `release` (a failing test must not hang the run).
HOLD_LIMIT_S = 30.0


@dataclass
class LlmServer:
    base_url: str = ""
    replies: list[str] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    holding: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, *texts: str) -> None:
        """Answer the next requests with these texts, in order."""
        with self.lock:
            self.replies.extend(texts)

    def fail(self, status: int, times: int = 1) -> None:
        """Answer the next `times` requests with an OpenAI error of HTTP `status`."""
        with self.lock:
            self.failures.extend([status] * times)

    def hold(self) -> None:
        """Make the next request wait for `release`."""
        self.holding = True

    def answer(self, request: dict[str, Any], authorization: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append({**request, "authorization": authorization})
            failure = self.failures.pop(0) if self.failures else None
            canned = self.replies.pop(0) if self.replies else None
        if failure is not None:
            error = {"message": f"injected failure {failure}", "type": "server_error"}
            return failure, {"error": {**error, "param": None, "code": None}}
        user = [m["content"] for m in request.get("messages", []) if m.get("role") == "user"]
        json_mode = (request.get("response_format") or {}).get("type") == "json_object"
        if canned is not None:
            content = canned
        elif json_mode:
            content = json.dumps({"echo": user[-1] if user else ""})
        else:
            content = f"echo: {user[-1] if user else ''}"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
        completion_tokens = len(content.split())
        return 200, {
            "id": f"chatcmpl-test-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "test-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _handler(server: LlmServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "nf"}})
                return
            try:
                request = json.loads(body)
            except ValueError:
                self._send(400, {"error": {"message": "body is not JSON", "type": "invalid"}})
                return
            if server.holding:
                server.holding = False
                server.arrived.set()
                server.release.wait(HOLD_LIMIT_S)
            status, answer = server.answer(request, self.headers.get("authorization", ""))
            self._send(status, answer)

        def _send(self, status: int, document: dict[str, Any]) -> None:
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            # The client may have gone away (a cancelled step): nothing to tell it then.
            with contextlib.suppress(OSError):
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_llm_server() -> Iterator[LlmServer]:
    """An LlmServer listening on a free loopback port, in a thread, for the block's length."""
    state = LlmServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="llm-server", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
