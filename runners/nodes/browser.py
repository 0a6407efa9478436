"""`browser.*` steps: Playwright actions on the execution's browser session (browser_sessions.py).

Selectors are Playwright's: CSS (`#id`, `css=...`), `text=Sign in`, `role=button[name="Save"]`,
`data-testid=submit`, `xpath=...`. Every wait is bounded by the step's time left. Files come
from and go to the workspace's artifact store: an upload names an artifact (`sha256`) or a
workspace file (`path`); a download and a screenshot become artifacts.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Locator, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from infra.artifacts import ArtifactError
from runners.nodes.browser_sessions import BrowserSessions, Session
from runners.nodes.context import StepContext
from runners.nodes.errors import StepError

Act = Callable[[Page, float], Awaitable[Any]]  # (page, timeout in ms) → output

LOAD_STATES = ("load", "domcontentloaded", "networkidle")
ELEMENT_STATES = ("attached", "detached", "visible", "hidden")
MAX_TEXT = 100_000
#: Of a step's time, what is kept for the URL and screenshot of a failure (at most a quarter).
EVIDENCE_S = 3.0


def _sessions(ctx: StepContext) -> BrowserSessions:
    sessions = ctx.sessions
    if not isinstance(sessions, BrowserSessions):
        raise StepError(
            "WrongPool",
            f"{ctx.task.get('node_type')} runs on the browser pool (autoops runner --pool browser)",
        )
    return sessions


def _on_page(config: dict[str, Any], ctx: StepContext, act: Act) -> Any:
    """Run `act` on the execution's page. Playwright's waits end a little before the step's
    time does, so a step that fails on the page still has time to report what it saw."""
    seconds = ctx.time_left(config)
    wait_ms = (seconds - min(EVIDENCE_S, seconds / 4)) * 1000

    async def action(session: Session) -> Any:
        return await act(session.page, wait_ms)

    return _sessions(ctx).act(
        ctx.task["execution_id"],
        action,
        timeout_s=seconds,
        cancelled=ctx.cancelled,
        # A failure screenshot could show a secret the step typed: none for steps with one.
        screenshot=not ctx.secrets,
    )


def _web_url(config: dict[str, Any]) -> str:
    """An http(s) URL (or about:blank): a page of the web, never a file of the runner's host
    (`file://` would read the artifact store and the runner's own files)."""
    url = _text(config, "url").strip()
    scheme = urlsplit(url).scheme.lower()
    if url != "about:blank" and scheme not in ("http", "https"):
        raise StepError("ConfigError", f"url must be http:// or https:// (not {scheme or url!r})")
    return url


def _text(config: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = config.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise StepError("ConfigError", f"{key} must be a non-empty string")
    return value


def _selector(config: dict[str, Any]) -> str:
    selector = _text(config, "selector")
    if len(selector) > 2_000:
        raise StepError("ConfigError", "selector is longer than 2000 characters")
    return selector


def _one(page: Page, config: dict[str, Any]) -> Locator:
    """The element the selector names (Playwright refuses to act when it names several)."""
    return page.locator(_selector(config))


# -- session -----------------------------------------------------------------------------------


def browser_open(config: dict[str, Any], ctx: StepContext) -> Any:
    options: dict[str, Any] = {}
    viewport = config.get("viewport")
    if viewport is not None:
        sizes = [viewport.get(k) for k in ("width", "height")] if isinstance(viewport, dict) else []
        if not (sizes and all(isinstance(n, int) and n > 0 for n in sizes)):
            raise StepError("ConfigError", "viewport must be {width, height} in pixels")
        options["viewport"] = {"width": viewport["width"], "height": viewport["height"]}
    for key in ("user_agent", "locale", "timezone_id"):
        if config.get(key) is not None:
            options[key] = _text(config, key)
    if config.get("storage_state") is not None:
        state = config["storage_state"]
        if not isinstance(state, dict):
            raise StepError("ConfigError", "storage_state must be {cookies, origins}")
        options["storage_state"] = state
    if config.get("url"):
        _web_url(config)
    seconds = ctx.time_left(config)
    opened = _sessions(ctx).open(
        ctx.task["execution_id"], ctx.workspace, options, timeout_s=seconds, cancelled=ctx.cancelled
    )
    if config.get("url"):
        opened |= browser_goto(config, ctx)
    return opened


def browser_close(config: dict[str, Any], ctx: StepContext) -> Any:
    return {"closed": _sessions(ctx).release(ctx.task["execution_id"])}


# -- navigation and waiting --------------------------------------------------------------------


def browser_goto(config: dict[str, Any], ctx: StepContext) -> Any:
    url = _web_url(config)
    wait_until = config.get("wait_until") or "load"
    if wait_until not in (*LOAD_STATES, "commit"):
        raise StepError(
            "ConfigError", f"wait_until must be one of {', '.join(LOAD_STATES)}, commit"
        )

    async def act(page: Page, timeout: float) -> Any:
        response = await page.goto(url, wait_until=wait_until, timeout=timeout)  # type: ignore[arg-type]
        return {
            "url": page.url,
            "status": response.status if response else None,
            "title": await page.title(),
        }

    return _on_page(config, ctx, act)


def browser_wait_for(config: dict[str, Any], ctx: StepContext) -> Any:
    """Wait for an element's state (`selector` + `state`), a URL (`url`, glob or exact) or a
    load state (`load_state`), whichever the config names."""
    named = [k for k in ("selector", "url", "load_state") if config.get(k)]
    if len(named) != 1:
        raise StepError("ConfigError", "name exactly one of selector, url, load_state")

    async def act(page: Page, timeout: float) -> Any:
        if config.get("selector"):
            state = config.get("state") or "visible"
            if state not in ELEMENT_STATES:
                raise StepError("ConfigError", f"state must be one of {', '.join(ELEMENT_STATES)}")
            await _one(page, config).wait_for(state=state, timeout=timeout)  # type: ignore[arg-type]
            return {"selector": config["selector"], "state": state}
        if config.get("url"):
            await page.wait_for_url(_text(config, "url"), timeout=timeout)
            return {"url": page.url}
        load_state = config["load_state"]
        if load_state not in LOAD_STATES:
            raise StepError("ConfigError", f"load_state must be one of {', '.join(LOAD_STATES)}")
        await page.wait_for_load_state(load_state, timeout=timeout)
        return {"load_state": load_state, "url": page.url}

    return _on_page(config, ctx, act)


# -- input -------------------------------------------------------------------------------------


def _element_action(name: str) -> Callable[[dict[str, Any], StepContext], Any]:
    async def run(locator: Locator, config: dict[str, Any], timeout: float, typed: str) -> Any:
        if name == "click":
            button = config.get("button") or "left"
            if button not in ("left", "right", "middle"):
                raise StepError("ConfigError", "button must be left, right or middle")
            await locator.click(button=button, timeout=timeout)  # type: ignore[arg-type]
        elif name == "double_click":
            await locator.dblclick(timeout=timeout)
        elif name == "fill":
            await locator.fill(typed, timeout=timeout)
        elif name == "type":
            delay = config.get("delay_ms") or 0
            if not isinstance(delay, int | float) or not 0 <= delay <= 1000:
                raise StepError("ConfigError", "delay_ms must be between 0 and 1000")
            await locator.press_sequentially(_text(config, "text"), delay=delay, timeout=timeout)
        elif name == "check":
            await locator.check(timeout=timeout)
        elif name == "uncheck":
            await locator.uncheck(timeout=timeout)
        elif name == "hover":
            await locator.hover(timeout=timeout)
        return {"selector": config["selector"]}

    def executor(config: dict[str, Any], ctx: StepContext) -> Any:
        _selector(config)  # a bad config fails before the page is touched
        secret = ctx.secret_text(config) if name == "fill" else None
        typed = secret if secret is not None else _text(config, "value", required=False)

        async def act(page: Page, timeout: float) -> Any:
            return await run(_one(page, config), config, timeout, typed)

        return _on_page(config, ctx, act)

    executor.__name__ = f"browser_{name}"
    return executor


browser_click = _element_action("click")
browser_double_click = _element_action("double_click")
browser_fill = _element_action("fill")
browser_type = _element_action("type")
browser_check = _element_action("check")
browser_uncheck = _element_action("uncheck")
browser_hover = _element_action("hover")


def browser_press(config: dict[str, Any], ctx: StepContext) -> Any:
    """A key or chord (`Enter`, `Control+A`) on an element, or on the page without a selector."""
    key = _text(config, "key")

    async def act(page: Page, timeout: float) -> Any:
        if config.get("selector"):
            await _one(page, config).press(key, timeout=timeout)
        else:
            await page.keyboard.press(key)
        return {"key": key}

    return _on_page(config, ctx, act)


def browser_select_option(config: dict[str, Any], ctx: StepContext) -> Any:
    """Select options of a `<select>` by value or label (`values`: one or a list)."""
    _selector(config)
    values = config.get("values")
    wanted = [values] if isinstance(values, str) else values
    if not (isinstance(wanted, list) and wanted and all(isinstance(v, str) for v in wanted)):
        raise StepError("ConfigError", "values must be a string or a list of strings")

    async def act(page: Page, timeout: float) -> Any:
        # Playwright matches each string against the options' values and labels.
        return {"selected": await _one(page, config).select_option(wanted, timeout=timeout)}

    return _on_page(config, ctx, act)


def browser_upload_file(config: dict[str, Any], ctx: StepContext) -> Any:
    """Set the files of an `<input type=file>`: each `{"sha256": ..., "name": ...}` (an
    artifact) or `{"path": ...}` (a workspace file)."""
    _selector(config)
    files = config.get("files")
    if not isinstance(files, list) or not files:
        raise StepError("ConfigError", "files must be a non-empty list")
    payloads = []
    for item in files:
        if not isinstance(item, dict):
            raise StepError("ConfigError", "each file is {sha256, name} or {path}")
        try:
            if item.get("path"):
                path = _text(item, "path")
                data = ctx.artifacts.read_file(ctx.workspace, path)
                name = path.rsplit("/", 1)[-1]
            else:
                sha256 = _text(item, "sha256")
                data = ctx.artifacts.get_bytes(ctx.workspace, sha256)
                name = str(item.get("name") or sha256[:16])
        except ArtifactError as exc:
            raise StepError("FileNotFound", str(exc)) from None
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        payloads.append({"name": name, "mimeType": media_type, "buffer": data})

    async def act(page: Page, timeout: float) -> Any:
        await _one(page, config).set_input_files(payloads, timeout=timeout)  # type: ignore[arg-type]
        return {"files": [{"name": p["name"], "size": len(p["buffer"])} for p in payloads]}

    return _on_page(config, ctx, act)


def browser_download(config: dict[str, Any], ctx: StepContext) -> Any:
    """Click what starts a download and keep the file: an artifact, and a workspace file too
    when `save_as` names one."""
    _selector(config)
    save_as = config.get("save_as")
    if save_as is not None:
        _text(config, "save_as")

    async def act(page: Page, timeout: float) -> Any:
        async with page.expect_download(timeout=timeout) as started:
            await _one(page, config).click(timeout=timeout)
        download = await started.value
        path = await download.path()
        size = (await asyncio.to_thread(path.stat)).st_size
        limit = ctx.settings.browser_max_download_bytes
        if size > limit:
            await download.delete()
            raise StepError(
                "DownloadTooLarge",
                f"{download.suggested_filename} is {size} bytes, over {limit} "
                "(AUTOOPS_BROWSER_MAX_DOWNLOAD_BYTES)",
            )
        data = await asyncio.to_thread(path.read_bytes)
        await download.delete()
        name = download.suggested_filename
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        ref = await asyncio.to_thread(ctx.artifacts.put_bytes, ctx.workspace, data, media_type)
        if save_as:
            try:
                await asyncio.to_thread(ctx.artifacts.write_file, ctx.workspace, save_as, data)
            except ArtifactError as exc:
                raise StepError("FileError", str(exc)) from None
        return {"file": ref, "filename": name, "size": len(data), "url": download.url}

    return _on_page(config, ctx, act)


# -- reading the page --------------------------------------------------------------------------


def browser_extract_text(config: dict[str, Any], ctx: StepContext) -> Any:
    """The text of the element (`all: true`: of every element the selector matches)."""
    _selector(config)

    async def act(page: Page, timeout: float) -> Any:
        locator = page.locator(config["selector"])
        if config.get("all"):
            await locator.first.wait_for(state="attached", timeout=timeout)
            texts = await locator.all_inner_texts()
            return {"texts": [t[:MAX_TEXT] for t in texts], "count": len(texts)}
        return {"text": (await locator.inner_text(timeout=timeout))[:MAX_TEXT]}

    return _on_page(config, ctx, act)


def browser_extract_attribute(config: dict[str, Any], ctx: StepContext) -> Any:
    _selector(config)
    attribute = _text(config, "attribute")

    async def act(page: Page, timeout: float) -> Any:
        locator = page.locator(config["selector"])
        if config.get("all"):
            await locator.first.wait_for(state="attached", timeout=timeout)
            values = [await item.get_attribute(attribute) for item in await locator.all()]
            return {"values": values, "count": len(values)}
        return {"value": await locator.get_attribute(attribute, timeout=timeout)}

    return _on_page(config, ctx, act)


_TABLE_JS = """table => {
  const text = cell => cell.innerText.trim();
  const rows = Array.from(table.rows);
  const headed = rows.length && Array.from(rows[0].cells).every(c => c.tagName === 'TH');
  const headers = headed ? Array.from(rows[0].cells).map(text) : null;
  const body = (headed ? rows.slice(1) : rows).map(r => Array.from(r.cells).map(text));
  return {headers, body};
}"""


def browser_extract_table(config: dict[str, Any], ctx: StepContext) -> Any:
    """An HTML table as rows: objects keyed by its header cells, or lists when it has none."""
    _selector(config)

    async def act(page: Page, timeout: float) -> Any:
        locator = _one(page, config)
        await locator.wait_for(state="attached", timeout=timeout)
        table = await locator.evaluate(_TABLE_JS)
        headers, body = table["headers"], table["body"]
        rows = [dict(zip(headers, row, strict=False)) for row in body] if headers else body
        return {"headers": headers, "rows": rows, "count": len(rows)}

    return _on_page(config, ctx, act)


def browser_evaluate(config: dict[str, Any], ctx: StepContext) -> Any:
    """Run JavaScript in the page (an expression, or a function given `arg`); its JSON result."""
    expression = _text(config, "expression")

    async def act(page: Page, timeout: float) -> Any:
        return {"result": await page.evaluate(expression, config.get("arg"))}

    return _on_page(config, ctx, act)


def browser_screenshot(config: dict[str, Any], ctx: StepContext) -> Any:
    """A PNG of the page (`full_page`: all of it) or of one element (`selector`): an artifact."""

    async def act(page: Page, timeout: float) -> Any:
        if config.get("selector"):
            png = await _one(page, config).screenshot(timeout=timeout)
        else:
            png = await page.screenshot(full_page=bool(config.get("full_page")), timeout=timeout)
        ref = await asyncio.to_thread(ctx.artifacts.put_bytes, ctx.workspace, png, "image/png")
        return {"screenshot": ref, "url": page.url}

    return _on_page(config, ctx, act)


# -- assertions --------------------------------------------------------------------------------


def browser_assert_text(config: dict[str, Any], ctx: StepContext) -> Any:
    """The element's text contains `text` (`exact: true`: equals it, whitespace trimmed),
    waiting for it up to the step's time."""
    _selector(config)
    expected = _text(config, "text", required=False)
    exact = bool(config.get("exact"))

    async def act(page: Page, timeout: float) -> Any:
        locator = _one(page, config)
        clock = asyncio.get_running_loop().time
        deadline = clock() + timeout / 1000
        actual: str | None = None
        while True:
            try:
                left_ms = max((deadline - clock()) * 1000, 1)
                actual = (await locator.inner_text(timeout=left_ms)).strip()
            except PlaywrightTimeout:
                break
            if (actual == expected.strip()) if exact else (expected in actual):
                return {"text": actual}
            if clock() >= deadline:
                break
            await asyncio.sleep(0.1)
        how = "equal" if exact else "contain"
        seen = "it was not found" if actual is None else f"its text is {actual[:500]!r}"
        raise StepError(
            "AssertionFailed", f"{config['selector']} does not {how} {expected!r}: {seen}"
        )

    return _on_page(config, ctx, act)


def browser_assert_visible(config: dict[str, Any], ctx: StepContext) -> Any:
    """The element is visible (`visible: false`: hidden or absent), waiting for it up to the
    step's time."""
    _selector(config)
    visible = config.get("visible", True) is not False

    async def act(page: Page, timeout: float) -> Any:
        try:
            await _one(page, config).wait_for(
                state="visible" if visible else "hidden", timeout=timeout
            )
        except PlaywrightTimeout:
            how = "visible" if visible else "hidden"
            raise StepError("AssertionFailed", f"{config['selector']} is not {how}") from None
        return {"selector": config["selector"], "visible": visible}

    return _on_page(config, ctx, act)


EXECUTORS = {
    "browser.open": browser_open,
    "browser.close": browser_close,
    "browser.goto": browser_goto,
    "browser.wait_for": browser_wait_for,
    "browser.click": browser_click,
    "browser.double_click": browser_double_click,
    "browser.fill": browser_fill,
    "browser.type": browser_type,
    "browser.press": browser_press,
    "browser.select_option": browser_select_option,
    "browser.check": browser_check,
    "browser.uncheck": browser_uncheck,
    "browser.hover": browser_hover,
    "browser.upload_file": browser_upload_file,
    "browser.download": browser_download,
    "browser.extract_text": browser_extract_text,
    "browser.extract_attribute": browser_extract_attribute,
    "browser.extract_table": browser_extract_table,
    "browser.evaluate": browser_evaluate,
    "browser.screenshot": browser_screenshot,
    "browser.assert_text": browser_assert_text,
    "browser.assert_visible": browser_assert_visible,
}
