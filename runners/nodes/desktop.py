"""`desktop.*` steps: mouse, keyboard, screen, vision, OCR, windows, apps and clipboard on the
runner's X display (desktop_screen.py). One desktop step runs at a time per display; the kill
switch and a cancel stop a step between its actions.

Coordinates are screen pixels from the top-left corner. Images to find are artifacts (uploaded
with `POST /artifacts`, named by `sha256`). A step that cannot find its image or text reports
a screenshot of what it saw in `error.details`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from typing import Any

from runners.nodes.context import StepContext
from runners.nodes.desktop_screen import (
    Box,
    Desktop,
    encode_png,
    find_phrase,
    lines_of,
    locate,
    read_words,
    scales_of,
)
from runners.nodes.errors import StepError

MAX_TYPED = 10_000
POLL_S = 0.25


def _desktop(ctx: StepContext) -> Desktop:
    if not isinstance(ctx.sessions, Desktop):
        raise StepError(
            "WrongPool",
            f"{ctx.task.get('node_type')} runs on the desktop pool (autoops runner --pool desktop)",
        )
    return ctx.sessions


def _exclusive(config: dict[str, Any], ctx: StepContext, body: Callable[[Desktop], Any]) -> Any:
    """Run `body` holding the display (one desktop step at a time), within the step's time."""
    desk = _desktop(ctx)
    give_up = time.monotonic() + ctx.time_left(config)
    while not desk.lock.acquire(timeout=0.1):  # waiting, it still hears cancels and the switch
        desk.check(ctx.cancelled)
        if time.monotonic() >= give_up:
            raise StepError("StepTimeout", "the display stayed busy with another step", True)
    try:
        desk.check(ctx.cancelled)
        return body(desk)
    except StepError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "FailSafeException":
            raise StepError(
                "FailSafe", "PyAutoGUI's fail-safe: the pointer went to a corner of the screen"
            ) from None
        raise
    finally:
        desk.lock.release()


def _int(config: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StepError("ConfigError", f"{key} must be a whole number from {low} to {high}")
    return value


def _number(config: dict[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise StepError("ConfigError", f"{key} must be a number from {low} to {high}")
    return float(value)


def _point(desk: Desktop, config: dict[str, Any], prefix: str = "") -> tuple[int, int]:
    width, height = desk.screen_size()
    return (
        _int(config, f"{prefix}x", 0, width - 1),
        _int(config, f"{prefix}y", 0, height - 1),
    )


def _region(desk: Desktop, config: dict[str, Any]) -> Box | None:
    region = config.get("region")
    if region is None:
        return None
    width, height = desk.screen_size()
    if not isinstance(region, dict):
        raise StepError("ConfigError", "region must be {x, y, width, height}")
    box = Box(
        _int(region, "x", 0, width - 1),
        _int(region, "y", 0, height - 1),
        _int(region, "width", 1, width),
        _int(region, "height", 1, height),
    )
    if box.x + box.width > width or box.y + box.height > height:
        raise StepError("ConfigError", f"region goes past the {width}x{height} screen")
    return box


def _button(config: dict[str, Any], default: str = "left") -> str:
    button = config.get("button") or default
    if button not in ("left", "right", "middle"):
        raise StepError("ConfigError", "button must be left, right or middle")
    return str(button)


def _key(desk: Desktop, key: Any) -> str:
    if not isinstance(key, str) or not desk.gui().isValidKey(key.lower()):
        raise StepError("ConfigError", f"{key!r} is not a key name (enter, tab, ctrl, f5, a, …)")
    return key.lower()


def _evidence(desk: Desktop, ctx: StepContext) -> dict[str, Any]:
    """A screenshot of what the step saw; the step's own failure is reported either way."""
    if ctx.secrets:
        return {"screenshot_error": "not taken: the step uses credentials"}
    try:
        png = encode_png(desk.grab())
        return {"screenshot": ctx.artifacts.put_bytes(ctx.workspace, png, "image/png")}
    except Exception as exc:  # the screen is gone or the store refused: say so
        return {"screenshot_error": str(exc)[:200]}


def _before_acting(desk: Desktop, config: dict[str, Any], ctx: StepContext) -> None:
    """Right before a click or key that changes the world: not after a cancel, the kill
    switch or the step's deadline (a late click could be a second one after a retry)."""
    desk.check(ctx.cancelled)
    ctx.time_left(config)


# -- pointer ----------------------------------------------------------------------------------


def _clicker(clicks: int, default_button: str) -> Callable[[dict[str, Any], StepContext], Any]:
    def executor(config: dict[str, Any], ctx: StepContext) -> Any:
        def body(desk: Desktop) -> Any:
            x, y = _point(desk, config)
            button = _button(config, default_button)
            desk.gui().click(x, y, clicks=clicks, interval=0.05, button=button)
            return {"x": x, "y": y, "button": button, "clicks": clicks}

        return _exclusive(config, ctx, body)

    return executor


desktop_click = _clicker(1, "left")
desktop_double_click = _clicker(2, "left")
desktop_right_click = _clicker(1, "right")


def desktop_move_to(config: dict[str, Any], ctx: StepContext) -> Any:
    def body(desk: Desktop) -> Any:
        x, y = _point(desk, config)
        desk.gui().moveTo(x, y, duration=_number(config, "duration_s", 0, 10, 0))
        return {"x": x, "y": y}

    return _exclusive(config, ctx, body)


def desktop_drag_to(config: dict[str, Any], ctx: StepContext) -> Any:
    """Press at `from_x, from_y` (default: where the pointer is), move to `x, y`, release."""

    def body(desk: Desktop) -> Any:
        gui = desk.gui()
        x, y = _point(desk, config)
        if "from_x" in config or "from_y" in config:
            gui.moveTo(*_point(desk, config, "from_"))
            _before_acting(desk, config, ctx)
        duration = _number(config, "duration_s", 0, 10, 0.3)
        gui.dragTo(x, y, duration=duration, button=_button(config))
        return {"x": x, "y": y}

    return _exclusive(config, ctx, body)


def desktop_scroll(config: dict[str, Any], ctx: StepContext) -> Any:
    """Scroll the wheel `clicks` notches (positive: up), at `x, y` when given."""

    def body(desk: Desktop) -> Any:
        clicks = _int(config, "clicks", -100, 100)
        at = _point(desk, config) if "x" in config or "y" in config else (None, None)
        desk.gui().scroll(clicks, x=at[0], y=at[1])
        return {"clicks": clicks}

    return _exclusive(config, ctx, body)


# -- keyboard ---------------------------------------------------------------------------------


def desktop_type_text(config: dict[str, Any], ctx: StepContext) -> Any:
    """Type `text`, or the secret of a credential (`credential`, `field`) without it ever
    appearing in the workflow, the events or the output."""
    text = ctx.secret_text(config)
    if text is None:
        text = config.get("text")
    if not isinstance(text, str) or not text or len(text) > MAX_TYPED:
        raise StepError("ConfigError", f"text must be 1 to {MAX_TYPED} characters")
    interval = _number(config, "interval_s", 0, 1, 0.0)

    def body(desk: Desktop) -> Any:
        gui = desk.gui()
        untypable = [i for i, c in enumerate(text) if not gui.isValidKey(c) and c != "\n"]
        if untypable:  # the text may be a secret: say where, not what
            raise StepError(
                "ConfigError",
                f"{len(untypable)} characters (the first at position {untypable[0] + 1}) are "
                "not keys of the keyboard: use desktop.clipboard_set and a paste hotkey",
            )
        for start in range(0, len(text), 20):  # the kill switch is checked between chunks
            desk.check(ctx.cancelled)
            gui.write(text[start : start + 20], interval=interval)
        return {"typed": len(text)}

    return _exclusive(config, ctx, body)


def desktop_press_key(config: dict[str, Any], ctx: StepContext) -> Any:
    def body(desk: Desktop) -> Any:
        key = _key(desk, config.get("key"))
        presses = _int(config, "presses", 1, 100, 1)
        desk.gui().press(key, presses=presses, interval=0.02)
        return {"key": key, "presses": presses}

    return _exclusive(config, ctx, body)


def desktop_hotkey(config: dict[str, Any], ctx: StepContext) -> Any:
    keys = config.get("keys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= 5:
        raise StepError("ConfigError", "keys must be a list of 1 to 5 key names (ctrl, c)")

    def body(desk: Desktop) -> Any:
        names = [_key(desk, k) for k in keys]
        desk.gui().hotkey(*names)
        return {"keys": names}

    return _exclusive(config, ctx, body)


# -- screen and vision ------------------------------------------------------------------------


def desktop_screenshot(config: dict[str, Any], ctx: StepContext) -> Any:
    def body(desk: Desktop) -> Any:
        region = _region(desk, config)
        image = desk.grab(region)
        ref = ctx.artifacts.put_bytes(ctx.workspace, encode_png(image), "image/png")
        return {"screenshot": ref, "width": int(image.shape[1]), "height": int(image.shape[0])}

    return _exclusive(config, ctx, body)


def _finder(config: dict[str, Any], ctx: StepContext) -> Callable[[Desktop], dict[str, Any]]:
    """A function that looks for the config's image once: `found`, and where, how sure."""
    threshold = _number(config, "threshold", 0.1, 1.0, 0.8)
    scales = scales_of(config.get("scales"))

    def find(desk: Desktop) -> dict[str, Any]:
        template = desk.template(ctx.workspace, config.get("image"))
        region = _region(desk, config)
        screen = desk.grab(region)
        match = locate(screen, template, 0.0, scales)
        if match is None:
            return {"found": False, "confidence": 0.0}
        if region is not None:
            box = match.box
            match = type(match)(
                Box(box.x + region.x, box.y + region.y, box.width, box.height),
                match.confidence,
                match.scale,
            )
        if match.confidence < threshold:
            return {"found": False, "confidence": round(match.confidence, 4)}
        return match.as_dict()

    return find


def desktop_locate_image(config: dict[str, Any], ctx: StepContext) -> Any:
    """Where the image is on the screen (multi-scale template matching): `found`, `box`,
    `center`, `confidence`, `scale`; `found: false` (and the best confidence) otherwise."""
    find = _finder(config, ctx)
    return _exclusive(config, ctx, find)


def _wait_until_found(
    desk: Desktop,
    config: dict[str, Any],
    ctx: StepContext,
    look: Callable[[Desktop], dict[str, Any]],
    what: str,
    wait: bool,
) -> dict[str, Any]:
    """Look once (wait=False) or until found within the step's time; else a failure with a
    screenshot of what was on the screen."""
    seconds = ctx.time_left(config) * 0.9 if wait else 0.0  # the rest: the failure's screenshot
    end = time.monotonic() + max(seconds, 0)
    while True:
        desk.check(ctx.cancelled)
        seen = look(desk)
        if seen["found"]:
            return seen
        if time.monotonic() >= end:
            break
        desk.wait(POLL_S, ctx.cancelled)
    kind = "ImageNotFound" if what == "image" else "TextNotFound"
    best = f" (best match {seen['confidence']})" if "confidence" in seen else ""
    raise StepError(kind, f"the {what} is not on the screen{best}", wait, _evidence(desk, ctx))


def desktop_click_image(config: dict[str, Any], ctx: StepContext) -> Any:
    find = _finder(config, ctx)

    def body(desk: Desktop) -> Any:
        seen = _wait_until_found(desk, config, ctx, find, "image", bool(config.get("wait")))
        _before_acting(desk, config, ctx)
        desk.gui().click(seen["center"]["x"], seen["center"]["y"], button=_button(config))
        return seen

    return _exclusive(config, ctx, body)


def desktop_wait_for_image(config: dict[str, Any], ctx: StepContext) -> Any:
    find = _finder(config, ctx)
    return _exclusive(
        config, ctx, lambda desk: _wait_until_found(desk, config, ctx, find, "image", True)
    )


# -- text (OCR) -------------------------------------------------------------------------------


def _ocr(config: dict[str, Any]) -> tuple[int, float]:
    return _int(config, "psm", 3, 13, 11), _number(config, "min_confidence", 0, 100, 30)


def _words(desk: Desktop, config: dict[str, Any], *, every: bool = False) -> list[Any]:
    """The words read on the screen or region, in screen coordinates; those under the config's
    `min_confidence` left out unless `every`."""
    psm, floor = _ocr(config)
    region = _region(desk, config)
    words = read_words(desk.grab(region), psm=psm)
    if region is not None:
        words = [
            type(w)(
                w.text,
                w.confidence,
                Box(w.box.x + region.x, w.box.y + region.y, w.box.width, w.box.height),
                w.line,
            )
            for w in words
        ]
    return words if every else [w for w in words if w.confidence >= floor]


def desktop_read_text(config: dict[str, Any], ctx: StepContext) -> Any:
    """Tesseract's reading of the screen or a region: `text` (by line) and every word with
    its `box` and `confidence` (0 to 100)."""

    def body(desk: Desktop) -> Any:
        words = _words(desk, config)
        return {
            "text": lines_of(words),
            "words": [w.as_dict() for w in words],
            "count": len(words),
        }

    return _exclusive(config, ctx, body)


def _text_finder(config: dict[str, Any]) -> Callable[[Desktop], dict[str, Any]]:
    phrase = config.get("text")
    if not isinstance(phrase, str) or not phrase.strip():
        raise StepError("ConfigError", "text must be the words to find")
    occurrence = _int(config, "occurrence", 1, 100, 1)

    def find(desk: Desktop) -> dict[str, Any]:
        boxes = find_phrase(_words(desk, config, every=True), phrase, _ocr(config)[1])
        if len(boxes) < occurrence:
            return {"found": False}
        box = boxes[occurrence - 1]
        x, y = box.center
        return {"found": True, "box": box.as_dict(), "center": {"x": x, "y": y}}

    return find


def desktop_click_text(config: dict[str, Any], ctx: StepContext) -> Any:
    """Find words on the screen by OCR and click their centre."""
    find = _text_finder(config)

    def body(desk: Desktop) -> Any:
        seen = _wait_until_found(desk, config, ctx, find, "text", bool(config.get("wait")))
        _before_acting(desk, config, ctx)
        desk.gui().click(seen["center"]["x"], seen["center"]["y"], button=_button(config))
        return seen

    return _exclusive(config, ctx, body)


def desktop_wait_for_text(config: dict[str, Any], ctx: StepContext) -> Any:
    find = _text_finder(config)
    return _exclusive(
        config, ctx, lambda desk: _wait_until_found(desk, config, ctx, find, "text", True)
    )


# -- applications and windows ----------------------------------------------------------------


def desktop_launch_app(config: dict[str, Any], ctx: StepContext) -> Any:
    """Start a program on the display (`command`: a list of arguments, or one string split
    like a shell would, without running one); with `wait_for_window`, until a window whose
    title contains it shows."""
    command = config.get("command")
    argv = shlex.split(command) if isinstance(command, str) else command
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise StepError("ConfigError", "command must be a command line or a list of arguments")

    def body(desk: Desktop) -> Any:
        desk.gui()
        try:
            process = subprocess.Popen(
                argv,
                env={**os.environ, "DISPLAY": desk.display},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise StepError("LaunchFailed", f"cannot start {argv[0]!r}: {exc.strerror}") from None
        desk.launched(process)
        output: dict[str, Any] = {"pid": process.pid}
        title = config.get("wait_for_window")
        if title:
            end = time.monotonic() + ctx.time_left(config) - 0.5
            while True:
                try:
                    output["window"] = desk.find_window(str(title))
                    break
                except StepError:
                    if process.poll() is not None:
                        raise StepError(
                            "LaunchFailed", f"{argv[0]!r} exited with {process.returncode}"
                        ) from None
                    if time.monotonic() >= end:
                        raise StepError(
                            "WindowNotFound", f"no window titled {title!r} appeared", True
                        ) from None
                desk.wait(POLL_S, ctx.cancelled)
        return output

    return _exclusive(config, ctx, body)


def _title(config: dict[str, Any]) -> tuple[str, bool]:
    title = config.get("title")
    if not isinstance(title, str) or not title:
        raise StepError("ConfigError", "title must be (part of) a window title")
    return title, bool(config.get("regex"))


def desktop_list_windows(config: dict[str, Any], ctx: StepContext) -> Any:
    def body(desk: Desktop) -> Any:
        windows = [w for w in desk.windows() if w["visible"] or config.get("all")]
        if config.get("title"):
            wanted = str(config["title"]).casefold()
            windows = [w for w in windows if wanted in w["title"].casefold()]
        return {"windows": windows, "count": len(windows)}

    return _exclusive(config, ctx, body)


def desktop_focus_window(config: dict[str, Any], ctx: StepContext) -> Any:
    title, regex = _title(config)

    def body(desk: Desktop) -> Any:
        window = desk.find_window(title, regex=regex)
        desk.focus(window["id"])
        return {"window": window}

    return _exclusive(config, ctx, body)


def desktop_close_window(config: dict[str, Any], ctx: StepContext) -> Any:
    title, regex = _title(config)

    def body(desk: Desktop) -> Any:
        window = desk.find_window(title, regex=regex)
        desk.close_window(window["id"])
        return {"closed": window}

    return _exclusive(config, ctx, body)


# -- clipboard --------------------------------------------------------------------------------


def _clipboard(desk: Desktop) -> Any:
    desk.gui()  # DISPLAY is set for the clipboard tool
    import pyperclip

    return pyperclip


def desktop_clipboard_get(config: dict[str, Any], ctx: StepContext) -> Any:
    def body(desk: Desktop) -> Any:
        clip = _clipboard(desk)
        try:
            return {"text": clip.paste()}
        except clip.PyperclipException as exc:
            raise StepError("ClipboardError", str(exc)) from None

    return _exclusive(config, ctx, body)


def desktop_clipboard_set(config: dict[str, Any], ctx: StepContext) -> Any:
    text = config.get("text")
    if not isinstance(text, str):
        raise StepError("ConfigError", "text must be a string")

    def body(desk: Desktop) -> Any:
        clip = _clipboard(desk)
        try:
            clip.copy(text)
        except clip.PyperclipException as exc:
            raise StepError("ClipboardError", str(exc)) from None
        return {"length": len(text)}

    return _exclusive(config, ctx, body)


EXECUTORS = {
    "desktop.click": desktop_click,
    "desktop.double_click": desktop_double_click,
    "desktop.right_click": desktop_right_click,
    "desktop.move_to": desktop_move_to,
    "desktop.drag_to": desktop_drag_to,
    "desktop.scroll": desktop_scroll,
    "desktop.type_text": desktop_type_text,
    "desktop.press_key": desktop_press_key,
    "desktop.hotkey": desktop_hotkey,
    "desktop.screenshot": desktop_screenshot,
    "desktop.locate_image": desktop_locate_image,
    "desktop.click_image": desktop_click_image,
    "desktop.wait_for_image": desktop_wait_for_image,
    "desktop.read_text": desktop_read_text,
    "desktop.click_text": desktop_click_text,
    "desktop.wait_for_text": desktop_wait_for_text,
    "desktop.launch_app": desktop_launch_app,
    "desktop.list_windows": desktop_list_windows,
    "desktop.focus_window": desktop_focus_window,
    "desktop.close_window": desktop_close_window,
    "desktop.clipboard_get": desktop_clipboard_get,
    "desktop.clipboard_set": desktop_clipboard_set,
}
