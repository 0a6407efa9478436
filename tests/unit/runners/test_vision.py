"""The desktop runner's vision without a display: multi-scale template matching, the scale
range, and finding a phrase among OCR words."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.nodes.desktop_screen import Box, Word, find_phrase, locate, scales_of
from runners.nodes.errors import StepError


def icon() -> np.ndarray:  # type: ignore[type-arg]
    image = np.full((64, 64, 3), 255, np.uint8)
    cv2.rectangle(image, (2, 2), (62, 62), (156, 78, 31), -1)
    cv2.circle(image, (25, 25), 15, (46, 193, 242), -1)
    cv2.fillPoly(image, [np.array([[30, 58], [60, 58], [45, 28]])], (61, 38, 215))
    cv2.rectangle(image, (8, 46), (22, 56), (255, 255, 255), -1)
    return image


@settings(max_examples=25, deadline=None)
@given(
    scale=st.sampled_from([0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 1.8]),
    x=st.integers(0, 500),
    y=st.integers(0, 300),
    shade=st.integers(0, 255),
    seed=st.integers(0, 2**16),
)
def test_an_icon_drawn_at_another_scale_is_found_where_it_is(
    scale: float, x: int, y: int, shade: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    screen = np.full((480, 640, 3), shade, np.uint8)
    for _ in range(30):  # clutter that is not the icon
        cx, cy = int(rng.integers(0, 620)), int(rng.integers(0, 460))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(screen, (cx, cy), (cx + int(rng.integers(5, 40)), cy + 12), color, -1)
    size = round(64 * scale)
    screen[y : y + size, x : x + size] = cv2.resize(icon(), (size, size))
    match = locate(screen, icon(), 0.8, scales_of(None))
    assert match is not None
    assert abs(match.scale - scale) <= 0.051
    assert abs(match.box.x - x) <= 2 and abs(match.box.y - y) <= 2


def test_an_absent_icon_is_not_found_and_the_best_guess_is_low() -> None:
    screen = np.full((300, 400, 3), 240, np.uint8)
    cv2.putText(screen, "nothing here", (20, 150), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 0, 0), 2)
    assert locate(screen, icon(), 0.8, scales_of(None)) is None
    best = locate(screen, icon(), 0.0, scales_of(None))
    assert best is not None and best.confidence < 0.6


def test_scale_ranges_start_at_one_and_refuse_nonsense() -> None:
    assert scales_of({"min": 0.9, "max": 1.1, "step": 0.1}) == [1.0, 0.9, 1.1]
    assert len(scales_of(None)) == 31
    for bad in ({"min": 1.5}, {"max": 0.5}, {"step": 0}, "big"):
        with pytest.raises(StepError):
            scales_of(bad)


def words(*lines: str) -> list[Word]:
    out = []
    for n, line in enumerate(lines):
        for i, text in enumerate(line.split()):
            out.append(Word(text, 90.0, Box(i * 60, n * 30, 50, 20), (1, 1, n)))
    return out


def test_a_phrase_is_found_on_one_line_ignoring_case_and_punctuation() -> None:
    seen = words("Invoice 4711 was Approved, by Maria", "approved by Maria")
    first, second = find_phrase(seen, "approved by maria")
    assert first == Box(180, 0, 170, 20) and second.y == 30
    assert find_phrase(words("approved by", "Maria"), "approved by Maria") == []
    with pytest.raises(StepError):
        find_phrase(seen, " ... ")


def test_punctuation_on_the_screen_is_skipped_like_in_the_phrase() -> None:
    assert len(find_phrase(words("Save & Close", "Name - Date"), "Save & Close")) == 1
    assert len(find_phrase(words("Name - Date"), "Name Date")) == 1


def test_a_doubtful_word_between_two_wanted_ones_still_separates_them() -> None:
    seen = words("Do not delete all")
    seen[1] = Word("not", 12.0, seen[1].box, seen[1].line)  # read, but barely
    assert find_phrase(seen, "Do delete", min_confidence=30) == []
    assert find_phrase(seen, "not delete", min_confidence=30) == []  # too doubtful itself
    assert len(find_phrase(seen, "delete all", min_confidence=30)) == 1
