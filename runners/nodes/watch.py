"""Stopping a blocking call from outside: a watcher thread runs an abort action when the step
is cancelled or its time is up, and the step then learns which of the two happened.

Blocking reads cannot be interrupted by closing their socket from another thread (close does
not wake a `recv`), but shutting the socket down does: `SocketAborter` learns a request's
sockets through httpcore's `trace` extension, which httpx and the openai client both pass on.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: How often the watcher looks at the clock; cancellation itself wakes it at once.
_TICK_S = 0.05


class Watch:
    """Why the abort action ran: "cancelled", "timeout", or None while it has not."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.finished = False
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None


@contextlib.contextmanager
def watch(
    cancelled: threading.Event, abort: Callable[[], None], *, seconds: float
) -> Iterator[Watch]:
    """Run `abort` once if `cancelled` is set, or `seconds` pass, before the block ends."""
    state = Watch()
    until = time.monotonic() + seconds

    def watcher() -> None:
        while not state.finished:
            if cancelled.wait(_TICK_S):
                reason = "cancelled"
            elif time.monotonic() >= until:
                reason = "timeout"
            else:
                continue
            with state.lock:
                if state.finished:
                    return
                state.reason = reason
                with contextlib.suppress(Exception):
                    abort()
            return

    state.thread = threading.Thread(target=watcher, name="step-watch", daemon=True)
    state.thread.start()
    try:
        yield state
    finally:
        with state.lock:  # once finished, `abort` never runs: the resources may be reused
            state.finished = True


class SocketAborter:
    """Collects the sockets of the requests it traces; `abort()` shuts them all down, so a
    read blocked on one of them fails at once."""

    def __init__(self) -> None:
        self._streams: list[Any] = []
        self._lock = threading.Lock()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's `trace` extension callback."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self._streams.append(info.get("return_value"))

    def on_request(self, request: Any) -> None:
        """An httpx `request` event hook that adds the trace to every request sent."""
        request.extensions["trace"] = self.trace

    def abort(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
