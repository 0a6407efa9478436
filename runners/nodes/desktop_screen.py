"""The desktop a `desktop` runner drives: one X display, one step at a time.

Mouse and keyboard go through PyAutoGUI (its fail-safe stays on: the pointer in a screen corner
stops the step), the screen is read with mss, images are found with OpenCV's template matching
over a range of scales (so a template taken at one DPI or zoom still matches at another), text
is read by Tesseract with a box and a confidence per word, and windows are listed, focused and
closed over the X protocol (python-xlib, what xdotool and wmctrl speak).

A kill switch stops every desktop step: while the file `AUTOOPS_DESKTOP_KILL_FILE` exists
(default `<data dir>/desktop.kill`), a step fails at its next action with `KillSwitch`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from infra.artifacts import ArtifactError, ArtifactStore
from infra.settings import Settings
from runners.nodes.errors import StepError

#: Pause PyAutoGUI makes after each call (its default, 0.1 s, is for humans watching).
GUI_PAUSE_S = 0.03
DEFAULT_SCALES = (0.5, 2.0, 0.05)  # min, max, step
Image = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    @property
    def center(self) -> tuple[int, int]:
        return self.x + self.width // 2, self.y + self.height // 2

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Match:
    box: Box
    confidence: float
    scale: float

    def as_dict(self) -> dict[str, Any]:
        x, y = self.box.center
        return {
            "found": True,
            "box": self.box.as_dict(),
            "center": {"x": x, "y": y},
            "confidence": round(self.confidence, 4),
            "scale": round(self.scale, 3),
        }


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float
    box: Box
    line: tuple[int, int, int]  # (block, paragraph, line) as Tesseract numbers them

    def as_dict(self) -> dict[str, Any]:
        confidence = round(self.confidence, 1)
        return {"text": self.text, "confidence": confidence, "box": self.box.as_dict()}


# -- vision (pure: images in, answers out) ----------------------------------------------------


def scales_of(spec: Any) -> list[float]:
    """The scales to try: `{min, max, step}` (defaults 0.5, 2.0, 0.05), 1.0 always first."""
    spec = spec or {}
    if not isinstance(spec, dict):
        raise StepError("ConfigError", "scales must be {min, max, step}")
    low = float(spec.get("min", DEFAULT_SCALES[0]))
    high = float(spec.get("max", DEFAULT_SCALES[1]))
    step = float(spec.get("step", DEFAULT_SCALES[2]))
    if not (0.1 <= low <= 1.0 <= high <= 5.0 and 0.01 <= step <= 1.0):
        raise StepError("ConfigError", "scales need 0.1 ≤ min ≤ 1 ≤ max ≤ 5 and 0.01 ≤ step ≤ 1")
    count = round((high - low) / step) + 1
    others = [round(low + i * step, 4) for i in range(count)]
    return [1.0, *(s for s in others if abs(s - 1.0) > 1e-6)]


def locate(screen: Image, template: Image, threshold: float, scales: list[float]) -> Match | None:
    """The best match of `template` in `screen` over `scales` (normalised correlation of the
    grey images); None when the best is under `threshold`.

    Coarse to fine: every scale is tried on both images at half size, then the few best places
    are matched again at full size, at their scale and its neighbours, in a window around
    them. (A template under 24 pixels a side is matched at full size only.)"""
    haystack = _grey(screen)
    needle = _grey(template)
    ordered = sorted(set(scales))
    if min(needle.shape[:2]) < 24:
        best = _best(haystack, needle, ordered, None)
    else:
        small = cv2.resize(haystack, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        half = cv2.resize(needle, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        coarse = []
        for scale in ordered:
            found = _best(small, half, [scale], None)
            if found is not None:
                coarse.append(found)
        coarse.sort(key=lambda m: m.confidence, reverse=True)
        best = None
        for candidate in coarse[:3]:
            i = ordered.index(candidate.scale)
            near = ordered[max(0, i - 1) : i + 2]
            around = Box(candidate.box.x * 2, candidate.box.y * 2, candidate.box.width * 2,
                         candidate.box.height * 2)  # fmt: skip
            refined = _best(haystack, needle, near, around)
            if refined is not None and (best is None or refined.confidence > best.confidence):
                best = refined
    return best if best is not None and best.confidence >= threshold else None


def _best(haystack: Image, needle: Image, scales: list[float], near: Box | None) -> Match | None:
    """The best match over `scales`, anywhere or (`near`) in a window around that box."""
    best: Match | None = None
    for scale in scales:
        width = max(1, round(needle.shape[1] * scale))
        height = max(1, round(needle.shape[0] * scale))
        x0 = y0 = 0
        area = haystack
        if near is not None:
            margin = max(width, height) // 2 + 6
            x0, y0 = max(0, near.x - margin), max(0, near.y - margin)
            x1 = min(haystack.shape[1], near.x + near.width + margin)
            y1 = min(haystack.shape[0], near.y + near.height + margin)
            area = haystack[y0:y1, x0:x1]
        if width > area.shape[1] or height > area.shape[0] or min(width, height) < 4:
            continue
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(needle, (width, height), interpolation=interpolation)
        scores = cv2.matchTemplate(area, resized, cv2.TM_CCOEFF_NORMED)
        scores = np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
        _, score, _, (x, y) = cv2.minMaxLoc(scores)
        if best is None or score > best.confidence:
            best = Match(Box(int(x) + x0, int(y) + y0, width, height), float(score), scale)
    return best


def decode_image(data: bytes) -> Image:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise StepError("ConfigError", "the image is not a PNG, JPEG or other image OpenCV reads")
    return image


def encode_png(image: Image) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data)


def read_words(image: Image, psm: int = 11, upscale: float = 2.0) -> list[Word]:
    """The words Tesseract reads in `image`, with boxes in the image's coordinates. Small UI
    text reads better enlarged, so the image is scaled up first."""
    import pytesseract

    grey = _grey(image)
    if upscale != 1.0:
        grey = cv2.resize(grey, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    try:
        data = pytesseract.image_to_data(
            grey, config=f"--psm {psm}", output_type=pytesseract.Output.DICT
        )
    except pytesseract.TesseractNotFoundError:
        raise StepError(
            "OcrUnavailable", "Tesseract is not installed (apt-get install tesseract-ocr)"
        ) from None
    words = []
    for i, text in enumerate(data["text"]):
        text = text.strip()
        confidence = float(data["conf"][i])
        if not text or confidence < 0:
            continue
        box = Box(
            round(data["left"][i] / upscale),
            round(data["top"][i] / upscale),
            max(1, round(data["width"][i] / upscale)),
            max(1, round(data["height"][i] / upscale)),
        )
        line = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        words.append(Word(text, confidence, box, line))
    return words


def lines_of(words: list[Word]) -> str:
    lines: dict[tuple[int, int, int], list[str]] = {}
    for word in words:
        lines.setdefault(word.line, []).append(word.text)
    return "\n".join(" ".join(w) for w in lines.values())


def find_phrase(words: list[Word], phrase: str, min_confidence: float = 0.0) -> list[Box]:
    """Boxes of each place the phrase's words appear in a row on one line (case and
    punctuation ignored: a word of punctuation alone is skipped on both sides), each read with
    at least `min_confidence`. `words` are all the words read, so a doubtful word between two
    wanted ones still separates them."""
    wanted = [_norm(w) for w in phrase.split() if _norm(w)]
    if not wanted:
        raise StepError("ConfigError", "text must have a word in it")
    readable = [w for w in words if _norm(w.text)]
    found = []
    for i in range(len(readable) - len(wanted) + 1):
        run = readable[i : i + len(wanted)]
        if (
            all(_norm(w.text) == t for w, t in zip(run, wanted, strict=True))
            and len({w.line for w in run}) == 1
            and all(w.confidence >= min_confidence for w in run)
        ):
            x0 = min(w.box.x for w in run)
            y0 = min(w.box.y for w in run)
            x1 = max(w.box.x + w.box.width for w in run)
            y1 = max(w.box.y + w.box.height for w in run)
            found.append(Box(x0, y0, x1 - x0, y1 - y0))
    return found


def _norm(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word).casefold()


def _grey(image: Image) -> Image:
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


# -- the display --------------------------------------------------------------------------------


class DisplayLock:
    """One desktop step at a time on a display, across the threads of this runner and across
    runner processes on the machine (an advisory lock file per display in the temp folder)."""

    def __init__(self, display: str) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", display or "none")
        self.path = Path(tempfile.gettempdir()) / f"autoops-desktop-{name}.lock"
        self._threads = threading.Lock()
        self._file: Any = None

    def acquire(self, timeout: float = -1) -> bool:
        end = time.monotonic() + timeout if timeout >= 0 else None
        if not self._threads.acquire(timeout=timeout):
            return False
        handle = self.path.open("a")
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._file = handle
                return True
            except BlockingIOError:
                if end is not None and time.monotonic() >= end:
                    handle.close()
                    self._threads.release()
                    return False
                time.sleep(0.05)

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._threads.release()

    def __enter__(self) -> DisplayLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Desktop:
    """The display of one desktop runner. Steps take `lock` for their whole run: one desktop
    step at a time per display, whatever the runner's concurrency or how many runners drive it."""

    def __init__(self, settings: Settings, artifacts: ArtifactStore) -> None:
        self.settings = settings
        self.artifacts = artifacts
        self.display = settings.desktop_display or os.environ.get("DISPLAY") or ""
        default_kill = Path(settings.data_dir) / "desktop.kill"
        self.kill_file = Path(settings.desktop_kill_file or default_kill)
        self.lock = DisplayLock(self.display)
        self._gui: Any = None
        self._x: Any = None
        self._launched: list[Any] = []

    # -- guards ---------------------------------------------------------------------------

    def check(self, cancelled: threading.Event) -> None:
        """Between actions: stop when the kill switch is on or the step was cancelled."""
        if self.kill_file.exists():
            raise StepError("KillSwitch", f"the desktop kill switch is on ({self.kill_file})")
        if cancelled.is_set():
            raise StepError("Cancelled", "the step was cancelled")

    def gui(self) -> Any:
        """PyAutoGUI, bound to this display (it connects to X when first imported)."""
        if self._gui is None:
            if not self.display:
                raise StepError(
                    "NoDisplay", "no X display: set AUTOOPS_DESKTOP_DISPLAY (or DISPLAY)"
                )
            os.environ["DISPLAY"] = self.display
            Path.home().joinpath(".Xauthority").touch(exist_ok=True)
            try:
                import pyautogui
            except Exception as exc:  # Xlib raises its own errors when the display is gone
                raise StepError("NoDisplay", f"cannot open display {self.display}: {exc}") from None
            pyautogui.FAILSAFE = True
            pyautogui.PAUSE = GUI_PAUSE_S
            self._gui = pyautogui
        return self._gui

    def screen_size(self) -> tuple[int, int]:
        width, height = self.gui().size()
        return int(width), int(height)

    # -- screen ---------------------------------------------------------------------------

    def grab(self, region: Box | None = None) -> Image:
        """The screen (or a region of it) as a BGR image."""
        import mss

        self.gui()  # the display exists
        with mss.mss(display=self.display) as shooter:
            if region is None:
                monitor = shooter.monitors[0]
                area = {"left": monitor["left"], "top": monitor["top"],
                        "width": monitor["width"], "height": monitor["height"]}  # fmt: skip
            else:
                area = {"left": region.x, "top": region.y,
                        "width": region.width, "height": region.height}  # fmt: skip
            shot = np.asarray(shooter.grab(area))
        return cv2.cvtColor(shot, cv2.COLOR_BGRA2BGR)

    def template(self, workspace: str, sha256: Any) -> Image:
        if not isinstance(sha256, str) or not sha256:
            raise StepError("ConfigError", "image must be the sha256 of an uploaded artifact")
        try:
            data = self.artifacts.get_bytes(workspace, sha256)
        except ArtifactError as exc:
            raise StepError("FileNotFound", str(exc)) from None
        return decode_image(data)

    # -- windows (X protocol) -------------------------------------------------------------

    def _xdisplay(self) -> Any:
        if self._x is None:
            from Xlib import display as xdisplay

            self.gui()
            self._x = xdisplay.Display(self.display)
        return self._x

    def windows(self) -> list[dict[str, Any]]:
        """Top-level windows with a title, topmost last: id, title, pid, box, visible."""
        x = self._xdisplay()
        root = x.screen().root
        found: list[dict[str, Any]] = []

        def walk(window: Any, depth: int) -> None:
            try:
                children = window.query_tree().children
            except Exception:
                return
            for child in children:
                title = self._title(child)
                if title is not None:
                    try:
                        attributes = child.get_attributes()
                        geometry = child.get_geometry()
                        position = child.translate_coords(root, 0, 0)
                    except Exception:
                        continue
                    found.append({
                        "id": int(child.id),
                        "title": title,
                        "pid": self._pid(child),
                        "box": {"x": -position.x, "y": -position.y,
                                "width": geometry.width, "height": geometry.height},
                        "visible": attributes.map_state == 2,  # IsViewable
                    })  # fmt: skip
                elif depth < 2:
                    walk(child, depth + 1)

        walk(root, 0)
        return found

    def find_window(self, title: str, *, regex: bool = False) -> dict[str, Any]:
        try:
            pattern = re.compile(title if regex else re.escape(title), re.IGNORECASE)
        except re.error as exc:
            raise StepError("ConfigError", f"title is not a regular expression: {exc}") from None
        matches = [w for w in self.windows() if w["visible"] and pattern.search(w["title"])]
        if not matches:
            raise StepError("WindowNotFound", f"no visible window whose title matches {title!r}")
        return matches[-1]

    def focus(self, window_id: int) -> None:
        from Xlib import X, protocol

        x = self._xdisplay()
        window = x.create_resource_object("window", window_id)
        root = x.screen().root
        active = x.intern_atom("_NET_ACTIVE_WINDOW")
        event = protocol.event.ClientMessage(
            window=window, client_type=active, data=(32, [1, X.CurrentTime, 0, 0, 0])
        )
        root.send_event(event, event_mask=X.SubstructureRedirectMask | X.SubstructureNotifyMask)
        window.configure(stack_mode=X.Above)
        window.set_input_focus(X.RevertToParent, X.CurrentTime)
        x.sync()

    def close_window(self, window_id: int) -> None:
        """Ask the window to close (WM_DELETE_WINDOW) as a window manager would."""
        from Xlib import X, protocol

        x = self._xdisplay()
        window = x.create_resource_object("window", window_id)
        protocols = x.intern_atom("WM_PROTOCOLS")
        delete = x.intern_atom("WM_DELETE_WINDOW")
        supported = window.get_wm_protocols() or []
        if delete in supported:
            event = protocol.event.ClientMessage(
                window=window, client_type=protocols, data=(32, [delete, X.CurrentTime, 0, 0, 0])
            )
            window.send_event(event)
        else:
            window.destroy()
        x.sync()

    def _title(self, window: Any) -> str | None:
        x = self._xdisplay()
        try:
            name = window.get_full_property(x.intern_atom("_NET_WM_NAME"), 0)
            if name and name.value:
                value = name.value
                return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            legacy = window.get_wm_name()
        except Exception:
            return None
        return str(legacy) if legacy else None

    def _pid(self, window: Any) -> int | None:
        x = self._xdisplay()
        try:
            prop = window.get_full_property(x.intern_atom("_NET_WM_PID"), 0)
        except Exception:
            return None
        return int(prop.value[0]) if prop and len(prop.value) else None

    # -- what a runner asks of its pool's sessions ----------------------------------------

    def has_session(self, execution_id: str) -> bool:
        """A desktop keeps nothing per execution: the display is the session."""
        return False

    def release(self, execution_id: str) -> bool:
        return False

    # -- processes ------------------------------------------------------------------------

    def launched(self, process: Any) -> None:
        self._launched.append(process)

    def close(self) -> None:
        """Runner shutdown: forget the X connection (apps it launched keep running)."""
        if self._x is not None:
            with contextlib.suppress(Exception):
                self._x.close()
            self._x = None

    def wait(self, seconds: float, cancelled: threading.Event) -> None:
        """Sleep up to `seconds`, checking the kill switch and cancel as it goes."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check(cancelled)
            time.sleep(min(0.05, max(end - time.monotonic(), 0)))
