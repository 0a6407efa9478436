"""The supervisor restarts each child on its own back-off (children here are tiny scripts in
place of the platform's processes: what is under test is the restarting)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter

from infra.settings import load_settings
from infra.supervisor import Supervisor
from tests.waiting import wait_until


class Scripted(Supervisor):
    """A supervisor whose children run the given Python snippets."""

    def __init__(self, scripts: dict[str, str]) -> None:
        super().__init__(load_settings({}), tuple(scripts))
        self.scripts = scripts
        self.spawned: Counter[str] = Counter()

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        self.spawned[name] += 1
        return subprocess.Popen([sys.executable, "-c", self.scripts[name]])


def test_a_child_that_keeps_failing_holds_back_no_other_restart() -> None:
    supervisor = Scripted({"flaky": "raise SystemExit(3)", "steady": "import time; time.sleep(60)"})
    supervisor.start()
    watcher = threading.Thread(target=supervisor.watch)
    watcher.start()
    try:
        # Two restarts (after 1 and 2 s): the flaky child's next one is 4 s away.
        wait_until(lambda: supervisor.spawned["flaky"] >= 3, 30, "the flaky child restarted twice")
        steady = supervisor.children["steady"]
        steady.kill()
        wait_until(
            lambda: supervisor.children["steady"].pid != steady.pid or None,
            30,
            "the steady child restarted",
        )
        # It came back after its own second, not after the flaky child's four.
        assert supervisor.spawned["flaky"] == 3
        assert supervisor.restarts == 3
    finally:
        supervisor.stop()
        watcher.join()
    assert all(proc.poll() is not None for proc in supervisor.children.values())
