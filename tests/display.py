"""A virtual X display (Xvfb) for tests of headed browsers and desktop steps."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.waiting import wait_until


def free_display() -> int:
    taken = {p.name[1:] for p in Path("/tmp/.X11-unix").glob("X*")}
    return next(n for n in range(90, 200) if str(n) not in taken)


@contextlib.contextmanager
def xvfb(width: int = 1280, height: int = 800) -> Iterator[str]:
    """Start Xvfb on a free display; yields its name (":93")."""
    binary = shutil.which("Xvfb")
    assert binary, "Xvfb is not installed"
    number = free_display()
    proc = subprocess.Popen(
        [binary, f":{number}", "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        socket = Path(f"/tmp/.X11-unix/X{number}")
        wait_until(lambda: socket.exists() or proc.poll() is not None, 10, "Xvfb listening")
        assert proc.poll() is None, f"Xvfb :{number} exited with {proc.returncode}"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)
