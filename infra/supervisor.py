"""`autoops up`: embedded services where no URL is set, then every process, supervised.

Ctrl-C or SIGTERM stops the processes (SIGTERM, then SIGKILL after a grace period) and then
the services, in reverse order. Children die with the supervisor even if it is killed -9
(PR_SET_PDEATHSIG), so nothing is orphaned.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from infra import embedded, kafka
from infra.settings import Settings, settings_env

log = logging.getLogger(__name__)

#: `runner:<pool>` is a runner of that pool (`runner` alone: of `AUTOOPS_RUNNER_POOL`). A desktop
#: runner starts too when there is a display to drive (`default_processes`).
PROCESSES = ("relay", "projector", "orchestrator", "scheduler", "runner", "runner:browser", "api")


def default_processes(settings: Settings) -> tuple[str, ...]:
    """What `autoops up` starts: every process, and a desktop runner when a display is set."""
    if settings.desktop_display or os.environ.get("DISPLAY"):
        return (*PROCESSES[:-1], "runner:desktop", PROCESSES[-1])
    return PROCESSES


GRACE_S = 10.0
#: A process that ran this long before dying restarts after the shortest delay again.
STABLE_S = 30.0
#: How often the supervisor looks for children that exited (and restarts that are due).
WATCH_EVERY_S = 0.2


def ensure_database(url: str, name: str = "autoops") -> str:
    """The URL of database `name` on the server at `url`, created if missing."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0] + "/" + name
    return base + ("?" + query if query else "")


class Supervisor:
    """Starts the platform's processes and restarts any that dies until told to stop."""

    def __init__(self, settings: Settings, processes: tuple[str, ...] = PROCESSES) -> None:
        self.settings = settings
        self.names = processes
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_event = threading.Event()
        self.restarts = 0

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **settings_env(self.settings)}
        command, _, pool = name.partition(":")
        return subprocess.Popen(
            [sys.executable, "-m", "infra.cli", command, *(["--pool", pool] if pool else [])],
            env=env,
            preexec_fn=embedded.die_with_parent,
        )

    def start(self) -> None:
        for name in self.names:
            self.children[name] = self._spawn(name)

    def watch(self) -> None:
        """Restart children that exit on their own, until `stop_event` is set. Each waits out
        its own back-off: one process failing over and over delays no other's restart."""
        backoff: dict[str, float] = {}
        due: dict[str, float] = {}  # name -> when it restarts
        started = {name: time.monotonic() for name in self.children}
        while not self.stop_event.wait(WATCH_EVERY_S):
            for name, proc in list(self.children.items()):
                now = time.monotonic()
                if name in due:
                    if now >= due[name]:
                        del due[name]
                        self.restarts += 1
                        self.children[name] = self._spawn(name)
                        started[name] = time.monotonic()
                    continue
                if proc.poll() is None:
                    continue
                if now - started.get(name, 0.0) > STABLE_S:
                    backoff.pop(name, None)  # it ran fine for a while: a fresh failure
                delay = backoff[name] = min(backoff.get(name, 0.5) * 2, 30)
                log.warning("%s exited with %s; restarting in %.1f s", name, proc.returncode, delay)
                due[name] = now + delay

    def stop(self) -> None:
        self.stop_event.set()
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for proc in self.children.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def supervised(settings: Settings, processes: tuple[str, ...] = PROCESSES) -> Iterator[Supervisor]:
    """The processes running (restarted if they die) for the duration of the block, on the
    services `settings` names; for tests and benchmarks that bring their own services."""
    assert settings.kafka_bootstrap
    kafka.ensure_topics(settings.kafka_bootstrap, settings.kafka_partitions)
    supervisor = Supervisor(settings, processes)
    supervisor.start()
    watcher = threading.Thread(target=supervisor.watch, daemon=True)
    watcher.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
        watcher.join()


def start_services(settings: Settings) -> tuple[Settings, list[embedded.Service]]:
    """Embedded PostgreSQL, Tansu and Redis for every URL that is unset."""
    started: list[embedded.Service] = []
    data = Path(settings.data_dir).resolve()
    changes: dict[str, Any] = {}
    try:
        if settings.database_url is None:
            pg = embedded.start_postgres(data)
            started.append(pg)
            changes["database_url"] = ensure_database(pg.url)
        if settings.kafka_bootstrap is None:
            broker = embedded.start_tansu()
            started.append(broker)
            changes["kafka_bootstrap"] = broker.url
        if settings.redis_url is None:
            cache = embedded.start_redis(data / "redis")
            started.append(cache)
            changes["redis_url"] = cache.url
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise
    resolved = dataclasses.replace(settings, **changes)
    assert resolved.kafka_bootstrap
    kafka.ensure_topics(resolved.kafka_bootstrap, resolved.kafka_partitions)
    return resolved, started


def run_up(settings: Settings) -> int:
    resolved, services = start_services(settings)
    supervisor = Supervisor(resolved, default_processes(resolved))

    def on_signal(signum: int, _: object) -> None:
        supervisor.stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.start()
        print(
            f"AutoOps is up: http://{resolved.api_host}:{resolved.api_port}/graphql "
            f"(data in {Path(resolved.data_dir).resolve()}; Ctrl-C stops everything)",
            flush=True,
        )
        embedded_urls = {
            f"AUTOOPS_{name.upper()}": getattr(resolved, name)
            for name in ("database_url", "kafka_bootstrap", "redis_url")
            if getattr(settings, name) is None
        }
        if embedded_urls:
            # Single-process commands (`autoops replay`, `autoops user create`, one more
            # runner) need the URLs of what `up` started for them.
            exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in embedded_urls.items())
            print(f"Embedded services, for other autoops commands: export {exports}", flush=True)
        supervisor.watch()
    finally:
        supervisor.stop()
        for service in reversed(services):
            service.stop()
    return 0
