"""`make bench`: every benchmark, one line each. Results and machine notes: bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import sys

from bench import (
    append,
    browser,
    collab,
    desktop,
    executions,
    fanout_floor,
    lag,
    latency,
    loop_decisions,
    replay,
)


def main() -> None:
    print(f"# {platform.node()} · {os.cpu_count()} cpus · Python {sys.version.split()[0]}")
    for bench in (
        append.run,
        latency.run,
        lag.run,
        replay.run,
        loop_decisions.run,
        executions.run,
        browser.run,
        desktop.run,
        collab.run,
        fanout_floor.run,
    ):
        print(bench(), flush=True)


if __name__ == "__main__":
    main()
