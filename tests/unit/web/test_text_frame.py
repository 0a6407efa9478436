"""`text_frame` builds the bytes the `websockets` library would for a server's text frame."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from web.websocket import text_frame

BOUNDARIES = st.sampled_from([0, 1, 125, 126, 127, 65_535, 65_536, 65_537, 300_000])


@given(st.one_of(BOUNDARIES, st.integers(min_value=0, max_value=70_000)))
def test_a_text_frame_is_the_librarys(size: int) -> None:
    data = b"a" * size
    expected = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])
    assert text_frame(data) == expected
