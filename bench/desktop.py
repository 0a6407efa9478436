"""Template matching on a 1920x1080 screen: median ms of `locate` (what `desktop.locate_image`
runs after its screenshot) for a 64x64 icon drawn at 1.25x, over the default scale range
(0.5 to 2.0 by 0.05: 31 scales) beside a narrow one (0.9 to 1.3: 9 scales) and scale 1 alone,
alternating, on a synthetic screen with text-like clutter so the correlation has work to do.
Also the median ms of one OCR pass over a 465x85 paragraph region.
"""

from __future__ import annotations

import statistics
import time

import cv2
import numpy as np

from runners.nodes.desktop_screen import locate, read_words, scales_of

ROUNDS = 15


def _screen() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(7)
    screen = np.full((1080, 1920, 3), 245, np.uint8)
    for _ in range(400):  # windows, buttons and words
        x, y = int(rng.integers(0, 1850)), int(rng.integers(0, 1050))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(screen, (x, y), (x + int(rng.integers(10, 70)), y + 20), color, -1)
        cv2.putText(screen, "Save", (x, y + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1)
    icon = np.full((64, 64, 3), 255, np.uint8)
    cv2.rectangle(icon, (2, 2), (62, 62), (156, 78, 31), -1)
    cv2.circle(icon, (25, 25), 15, (46, 193, 242), -1)
    cv2.fillPoly(icon, [np.array([[30, 58], [60, 58], [45, 28]])], (61, 38, 215))
    big = cv2.resize(icon, (80, 80), interpolation=cv2.INTER_LINEAR)
    screen[700:780, 1300:1380] = big
    return screen, icon


def measure(rounds: int = ROUNDS) -> dict[str, float]:
    screen, icon = _screen()
    ranges = {
        "default range (31 scales)": scales_of(None),
        "0.9 to 1.3 (9 scales)": scales_of({"min": 0.9, "max": 1.3, "step": 0.05}),
        "scale 1 only": [1.0],
    }
    times: dict[str, list[float]] = {name: [] for name in ranges}
    for _ in range(rounds):
        for name, scales in ranges.items():
            start = time.perf_counter()
            found = locate(screen, icon, 0.0, scales)
            times[name].append((time.perf_counter() - start) * 1000)
            assert found is not None
    paragraph = np.full((85, 465, 3), 255, np.uint8)
    for i, line in enumerate(["Invoice 4711 was approved by Maria", "Total amount due 1280 EUR"]):
        cv2.putText(paragraph, line, (4, 28 + 34 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
    ocr = []
    for _ in range(5):
        start = time.perf_counter()
        read_words(paragraph)
        ocr.append((time.perf_counter() - start) * 1000)
    result = {name: statistics.median(t) for name, t in times.items()}
    result["OCR of a 465x85 region"] = statistics.median(ocr)
    return result


def run() -> str:
    """One line for `make bench`."""
    parts = [f"{name} {ms:.0f} ms" for name, ms in measure().items()]
    return "template match on 1920x1080, median: " + "; ".join(parts)


if __name__ == "__main__":
    print(run())
