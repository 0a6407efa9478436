"""Browser step overhead: median ms per `browser.click` and `browser.fill` on a local page, in
turn with the bare Playwright call on the runner's browser thread (the same page, no step) and
with Playwright's sync API on a Chromium of its own (what a hand-written script does), so the
differences are what a step adds (task checks, the hop to Playwright's thread, the session lock,
the output) and not the machine's mood. No Kafka: `run_step` as a runner calls it. A click
waits for the page's next frame (16.7 ms at 60 Hz), so clicks take one or two frames.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from infra.artifacts import FileArtifactStore
from infra.settings import Settings
from runners.nodes import StepContext, run_step
from runners.nodes.browser_sessions import CHROMIUM_ARGS, BrowserSessions, Session

PAGE = b"""<!doctype html><input id=name><button id=go onclick="this.dataset.n =
  (+this.dataset.n || 0) + 1">go</button>"""
ROUNDS = 300
WORKSPACE = "6f1f3c9e-2a0b-4c5d-9e8f-0a1b2c3d4e5f"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


def _task(execution_id: str, node_type: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": f"{execution_id}:n:1",
        "execution_id": execution_id,
        "workspace_id": WORKSPACE,
        "node_id": "n",
        "node_type": node_type,
        "attempt": 1,
        "config": config,
        "credentials": {},
        "timeout_s": 30.0,
        "deadline": time.time() + 600,
    }


def measure(rounds: int = ROUNDS) -> dict[str, tuple[float, float, float]]:
    """{action: median ms (as a step, as the bare Playwright call on the runner's browser
    thread, as the same call with Playwright's sync API on a Chromium of its own)}, the three
    in turn, round after round."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        settings = Settings(data_dir=Path(tmp))
        sessions = BrowserSessions(settings, FileArtifactStore(Path(tmp) / "artifacts"))
        execution_id = str(uuid.uuid4())
        cancelled = threading.Event()

        def step(node_type: str, config: dict[str, Any]) -> Any:
            task = _task(execution_id, node_type, config)
            ctx = StepContext(task, {}, sessions.artifacts, settings, cancelled, sessions)
            return run_step(task, ctx)

        browser = playwright.chromium.launch(
            executable_path=settings.chromium_path, args=CHROMIUM_ARGS
        )
        page = browser.new_page()
        page.goto(url)
        step("browser.open", {"url": url})
        actions: dict[str, tuple[dict[str, Any], str, tuple[Any, ...]]] = {
            "click": ({"selector": "#go"}, "click", ()),
            "fill": ({"selector": "#name", "value": "Ada"}, "fill", ("Ada",)),
        }
        results = {}
        try:
            for name, (config, method, args) in actions.items():
                as_step, bare, alone = [], [], []

                selector = config["selector"]

                async def direct(
                    session: Session,
                    selector: str = selector,
                    method: str = method,
                    args: Any = args,
                ) -> None:
                    await getattr(session.page.locator(selector), method)(*args)

                for _ in range(rounds):
                    t = time.perf_counter()
                    step(f"browser.{name}", config)
                    as_step.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    sessions.act(execution_id, direct, timeout_s=30, cancelled=cancelled)
                    bare.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    getattr(page.locator(config["selector"]), method)(*args)
                    alone.append((time.perf_counter() - t) * 1000)
                results[name] = (
                    statistics.median(as_step),
                    statistics.median(bare),
                    statistics.median(alone),
                )
        finally:
            browser.close()
            sessions.close()
            server.shutdown()
    return results


def run() -> str:
    """One line for `make bench`."""
    parts = [
        f"{name} {ms:.2f} ms (the bare call on the runner's browser thread {bare:.2f}, "
        f"Playwright's sync API {sync:.2f})"
        for name, (ms, bare, sync) in measure().items()
    ]
    return "browser step, median: " + "; ".join(parts)


if __name__ == "__main__":
    print(run())
