from __future__ import annotations

import subprocess
import sys

import pytest

from infra.settings import MAX_NICE


@pytest.mark.parametrize(("value", "added"), [("7", 7), ("0", 0)])
def test_a_background_process_lowers_its_own_priority_by_the_setting(
    value: str, added: int
) -> None:
    code = (
        "import os\n"
        "from infra.bootstrap import step_back\n"
        "from infra.settings import load_settings\n"
        "before = os.getpriority(os.PRIO_PROCESS, 0)\n"
        f"step_back(load_settings({{'AUTOOPS_BACKGROUND_NICE': '{value}'}}))\n"
        "import threading\n"
        "later = []\n"
        "t = threading.Thread(target=lambda: later.append(os.getpriority(os.PRIO_PROCESS, 0)))\n"
        "t.start(); t.join()\n"
        "print(before, os.getpriority(os.PRIO_PROCESS, 0), later[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, thread_made_later = map(int, out.stdout.split())
    assert after == thread_made_later == min(before + added, MAX_NICE)
