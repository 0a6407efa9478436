"""Browser sessions of a `browser` runner: one Chromium per runner, one session (a browser
context and its page) per execution, shared by that execution's steps.

Tasks are keyed by execution id, so every step of an execution reaches the runner that holds
its partition, and so its session. Playwright runs on one event-loop thread of its own; a step
thread hands it an action and waits, stopping it when the step is cancelled or out of time.
The steps of one execution take turns on its page. A session ends with `browser.close`, when
its execution ends (the orchestrator's control message), when it has been idle for
`AUTOOPS_BROWSER_SESSION_IDLE_S`, and when the runner stops.

Chromium is Debian's (`AUTOOPS_CHROMIUM_PATH`), headless unless `AUTOOPS_BROWSER_DISPLAY`
names an X display to show it on. A step that fails on a page reports the page's URL and a
screenshot (an artifact) in its error's details.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from infra.artifacts import ArtifactStore
from infra.settings import Settings
from runners.nodes.errors import StepError

log = logging.getLogger(__name__)

T = TypeVar("T")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
#: How long an action may outlive its step's time before the step gives up on it.
GRACE_S = 5.0
#: Longest the failure screenshot may take (a hung page must not hold the report).
FAILURE_SHOT_TIMEOUT_MS = 3_000
REAP_EVERY_S = 5.0


@dataclass
class Session:
    """One execution's browser context and page."""

    execution_id: str
    workspace: str
    context: BrowserContext
    page: Page
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)


Action = Callable[[Session], Awaitable[T]]


class BrowserSessions:
    """The browser sessions of one runner (thread-safe; Playwright lives on its own thread)."""

    def __init__(self, settings: Settings, artifacts: ArtifactStore) -> None:
        self.settings = settings
        self.artifacts = artifacts
        self._sessions: dict[str, Session] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._started = threading.Lock()
        self._closed = False
        # Loop-thread state: browser start-up, and opens per execution, take turns.
        self._lifecycle = asyncio.Lock()
        self._open_locks: dict[str, asyncio.Lock] = {}

    # -- called from step threads ------------------------------------------------------------

    def open(
        self,
        execution_id: str,
        workspace: str,
        options: dict[str, Any],
        *,
        timeout_s: float,
        cancelled: threading.Event,
    ) -> dict[str, Any]:
        """A new session for the execution (replacing one it had) with these context options."""
        return self._call(self._open(execution_id, workspace, options), timeout_s, cancelled)

    def act(
        self,
        execution_id: str,
        action: Action[T],
        *,
        timeout_s: float,
        cancelled: threading.Event,
        screenshot: bool = True,
    ) -> T:
        """Run `action` on the execution's session; StepError when it fails (with the page's URL
        and, unless `screenshot` is false, a screenshot), when there is no session, when
        cancelled or out of time."""
        return self._call(self._act(execution_id, action, screenshot), timeout_s, cancelled)

    def release(self, execution_id: str) -> bool:
        """Close the execution's session, if this runner has one; True when it had."""
        if self._loop is None or execution_id not in self._sessions:
            return False
        future = asyncio.run_coroutine_threadsafe(
            self._close_session(execution_id, ended=True), self._loop
        )
        try:
            return future.result(timeout=30)
        except (concurrent.futures.TimeoutError, PlaywrightError) as exc:
            log.warning("browser: closing the session of %s failed: %s", execution_id, exc)
            return False

    def has_session(self, execution_id: str) -> bool:
        return execution_id in self._sessions

    def close(self) -> None:
        """Close every session and the browser, then stop the Playwright thread."""
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            future.result(timeout=30)
        except Exception as exc:  # the browser is going away either way
            log.warning("browser: shutting down: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    # -- plumbing ----------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._started:
            if self._closed:
                raise StepError("RunnerStopping", "the runner is stopping", retryable=True)
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    reaper = loop.create_task(self._reap())
                    loop.run_forever()
                    reaper.cancel()
                    loop.run_until_complete(asyncio.gather(reaper, return_exceptions=True))
                    loop.close()

                self._thread = threading.Thread(target=serve, name="browser-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _call(self, coro: Awaitable[T], timeout_s: float, cancelled: threading.Event) -> T:
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(_awaited(coro), loop)
        give_up = time.monotonic() + timeout_s + GRACE_S
        while True:
            try:
                return future.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if cancelled.is_set():
                    future.cancel()
                    raise StepError("Cancelled", "the step was cancelled") from None
                if time.monotonic() > give_up:
                    future.cancel()
                    raise StepError(
                        "StepTimeout", "the browser did not finish in time", retryable=True
                    ) from None
            except concurrent.futures.CancelledError:
                raise StepError("Cancelled", "the step was cancelled") from None

    async def _browser_ready(self) -> Browser:
        """The runner's Chromium, started once (concurrent first opens wait for the one start;
        a cancelled step does not cut a start short, which would leave a driver behind)."""
        async with self._lifecycle:
            return await asyncio.shield(self._start_browser())

    async def _start_browser(self) -> Browser:
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        if self._browser is not None:  # it crashed: its sessions went with it
            log.warning("browser: Chromium went away; starting a new one")
            self._sessions.clear()
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        display = self.settings.browser_display
        env = {**os.environ, "DISPLAY": display} if display else None
        path = Path(self.settings.chromium_path)
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=str(path) if path.exists() else None,
                args=CHROMIUM_ARGS,
                headless=not display,
                env=env,  # type: ignore[arg-type]
            )
        except PlaywrightError as exc:
            raise StepError(
                "BrowserUnavailable",
                f"cannot start Chromium ({path}; AUTOOPS_CHROMIUM_PATH): {exc.message}",
                retryable=True,
            ) from None
        return self._browser

    async def _open(self, execution_id: str, workspace: str, options: dict[str, Any]) -> Any:
        browser = await self._browser_ready()
        async with self._opening(execution_id):  # two opens of one execution take turns
            await self._close_session(execution_id)
            try:
                context = await browser.new_context(accept_downloads=True, **options)
            except PlaywrightError as exc:
                raise StepError("BrowserError", _first_line(exc.message)) from None
            try:
                page = await context.new_page()
            except BaseException as exc:
                with contextlib.suppress(PlaywrightError):
                    await context.close()
                if isinstance(exc, PlaywrightError):
                    raise StepError("BrowserError", _first_line(exc.message)) from None
                raise
            self._sessions[execution_id] = Session(execution_id, workspace, context, page)
        return {"viewport": page.viewport_size, "headless": not self.settings.browser_display}

    def _opening(self, execution_id: str) -> asyncio.Lock:
        lock = self._open_locks.get(execution_id)
        if lock is None:
            lock = self._open_locks[execution_id] = asyncio.Lock()
        return lock

    async def _act(self, execution_id: str, action: Action[T], screenshot: bool) -> T:
        session = self._sessions.get(execution_id)
        if session is None:
            raise StepError(
                "NoBrowserSession",
                "this execution has no browser session on this runner: a workflow opens one "
                "with browser.open (a session does not survive its runner or browser.close)",
            )
        async with session.lock:
            if self._sessions.get(execution_id) is not session:  # closed while it waited
                raise StepError("NoBrowserSession", "the execution's browser session was closed")
            session.last_used = time.monotonic()
            try:
                return await action(session)
            except StepError as exc:
                if exc.type in ("ConfigError", "Cancelled"):
                    raise
                raise StepError(
                    exc.type, exc.message, exc.retryable, await self._evidence(session, screenshot)
                ) from None
            except PlaywrightTimeout as exc:
                raise StepError(
                    "BrowserTimeout",
                    _first_line(exc.message),
                    True,
                    await self._evidence(session, screenshot),
                ) from None
            except PlaywrightError as exc:
                raise StepError(
                    "BrowserError",
                    _first_line(exc.message),
                    False,
                    await self._evidence(session, screenshot),
                ) from None
            finally:
                session.last_used = time.monotonic()

    async def _evidence(self, session: Session, screenshot: bool) -> dict[str, Any]:
        """The page's URL and a screenshot of it, as far as the page and the store allow: the
        step's own failure is what gets reported either way."""
        details: dict[str, Any] = {"url": session.page.url}
        if not screenshot:
            details["screenshot_error"] = "not taken: the step uses credentials"
            return details
        try:
            png = await session.page.screenshot(timeout=FAILURE_SHOT_TIMEOUT_MS)
            ref = await asyncio.to_thread(
                self.artifacts.put_bytes, session.workspace, png, "image/png"
            )
            details["screenshot"] = ref
        except PlaywrightError as exc:
            details["screenshot_error"] = _first_line(exc.message)
        except Exception as exc:  # the artifact store refused it
            details["screenshot_error"] = f"not stored: {exc}"[:300]
        return details

    async def _close_session(self, execution_id: str, *, ended: bool = False) -> bool:
        """Close the execution's session, after the step using it (if any) ends or 10 s;
        `ended`: the execution is over (released, idle), so its open lock goes too."""
        session = self._sessions.pop(execution_id, None)
        if ended:
            self._open_locks.pop(execution_id, None)
        if session is None:
            return False
        try:
            await asyncio.wait_for(session.lock.acquire(), 10)
            held = True
        except TimeoutError:
            log.warning("browser: closing the session of %s under a running step", execution_id)
            held = False
        try:
            with contextlib.suppress(PlaywrightError):
                await session.context.close()
        finally:
            if held:
                session.lock.release()
        return True

    async def _reap(self) -> None:
        """Close sessions idle for longer than the setting (an execution that never ended)."""
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            limit = time.monotonic() - self.settings.browser_session_idle_s
            for execution_id, session in list(self._sessions.items()):
                if session.last_used < limit and not session.lock.locked():
                    log.info("browser: closing the idle session of %s", execution_id)
                    await self._close_session(execution_id, ended=True)

    async def _shutdown(self) -> None:
        for execution_id in list(self._sessions):
            await self._close_session(execution_id, ended=True)
        if self._browser is not None:
            with contextlib.suppress(PlaywrightError):
                await self._browser.close()
        if self._playwright is not None:
            await self._playwright.stop()


async def _awaited(coro: Awaitable[T]) -> T:
    return await coro


def _first_line(message: str) -> str:
    """Playwright's messages end in a call log: the first lines say what went wrong."""
    lines = [line for line in (message or "").splitlines() if line.strip()]
    head = lines[:1]
    for line in lines[1:3]:
        if "waiting for" in line or "locator resolved" in line:
            head.append(line.strip())
    return " · ".join(head)[:1000] or "the browser failed"
