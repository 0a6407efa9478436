"""Services and a running platform for the benchmarks (real processes, loopback only)."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg
import redis

from infra import embedded
from infra.settings import Settings, load_settings
from infra.supervisor import Supervisor, supervised

OTHER = "other processes on the host"
HOST = "host"


@dataclass
class Services:
    database_url: str
    bootstrap: str
    redis_url: str
    data_dir: Path


def _with_db(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


@contextmanager
def services() -> Iterator[Services]:
    """PostgreSQL and Redis from AUTOOPS_BENCH_DATABASE_URL / _REDIS_URL or embedded; a fresh
    database; a fresh Tansu broker."""
    started: list[embedded.Service] = []
    tmp = Path(tempfile.mkdtemp(prefix="autoops-bench-"))
    admin = os.environ.get("AUTOOPS_BENCH_DATABASE_URL")
    if not admin:
        pg = embedded.start_postgres(tmp)
        started.append(pg)
        admin = pg.url
    redis_url = os.environ.get("AUTOOPS_BENCH_REDIS_URL")
    if redis_url:
        # Heartbeats of an earlier run would make readiness pass too early.
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter("autoops:heartbeat:*"):
            client.delete(key)
        client.close()
    else:
        r = embedded.start_redis(tmp / "redis")
        started.append(r)
        redis_url = r.url
    broker = embedded.start_tansu()
    started.append(broker)
    name = f"autoops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Services(_with_db(admin, name), broker.url, redis_url, tmp)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for service in reversed(started):
            service.stop()


def database_of(svc: Services) -> str:
    """The name of the benchmark's database (its PostgreSQL backends are charged to it)."""
    return svc.database_url.rsplit("/", 1)[1].split("?")[0]


def settings_for(svc: Services, **extra: str) -> Settings:
    return load_settings(
        {
            "AUTOOPS_DATABASE_URL": svc.database_url,
            "AUTOOPS_KAFKA_BOOTSTRAP": svc.bootstrap,
            "AUTOOPS_REDIS_URL": svc.redis_url,
            "AUTOOPS_DATA_DIR": str(svc.data_dir),
            "AUTOOPS_API_PORT": str(embedded.free_port()),
            "AUTOOPS_KAFKA_GROUP_TIMEOUT_MS": "3000",
            "AUTOOPS_LOG_LEVEL": "WARNING",
            # Any other AUTOOPS_* setting from the environment, to compare knobs side by side.
            **{
                k: v
                for k, v in os.environ.items()
                if k.startswith("AUTOOPS_")
                and not k.startswith(("AUTOOPS_BENCH_", "AUTOOPS_TEST_"))
            },
            **extra,
        }
    )


@contextmanager
def platform(
    settings: Settings,
    processes: tuple[str, ...] = ("relay", "projector", "api"),
) -> Iterator[Supervisor]:
    with supervised(settings, processes) as supervisor:
        if "api" in processes:
            wait_ready(f"http://127.0.0.1:{settings.api_port}")
        yield supervisor


def wait_ready(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("platform did not become ready")


#: CPU seconds by part, and the wall seconds of the window they were used in.
Usage = tuple[dict[str, float], float]


class CpuMeter:
    """Cumulative CPU seconds of each part of the system under test, sampled on a thread so
    that any time window can be charged afterwards: the platform's processes and Tansu (this
    process's children), this load generator and its client processes ("bench client"), the
    PostgreSQL backends of the benchmark's database, and everything else on the host."""

    def __init__(self, database: str, every: float = 0.2) -> None:
        self._database = database
        self._every = every
        self._me = psutil.Process()
        self._parts: dict[int, tuple[str, psutil.Process] | None] = {}
        self._seen: dict[int, float] = {}  # kept after a process exits
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def _classify(self, pid: int) -> tuple[str, psutil.Process] | None:
        proc = psutil.Process(pid)
        if proc.name() == "postgres":
            return ("postgres", proc) if self._database in " ".join(proc.cmdline()) else None
        if pid == self._me.pid:
            return "bench client", proc
        child, parent = proc, proc.parent()
        while parent is not None and parent.pid != self._me.pid:
            child, parent = parent, parent.parent()
        if parent is None:
            return None
        args = child.cmdline()
        if "infra.cli" in args:
            return args[args.index("infra.cli") + 1], proc  # the process kind, options aside
        if child.name() == "redis-server":
            return "redis", proc
        return ("tansu" if "broker" in args else "bench client"), proc

    def _sample(self) -> None:
        totals: dict[str, float] = {}
        for pid in psutil.pids():
            if pid not in self._parts:
                try:
                    part = self._classify(pid)
                    if part is None and psutil.Process(pid).name() == "postgres":
                        continue  # a new backend names its database a bit later
                except psutil.Error:  # gone meanwhile
                    continue
                self._parts[pid] = part
        for pid, entry in self._parts.items():
            if entry is None:
                continue
            try:
                times = entry[1].cpu_times()
                self._seen[pid] = times.user + times.system
            except psutil.Error:
                pass
            totals[entry[0]] = totals.get(entry[0], 0.0) + self._seen.get(pid, 0.0)
        host = psutil.cpu_times()
        totals[HOST] = sum(host) - host.idle - getattr(host, "iowait", 0.0)
        self._samples.append((time.time(), totals))

    def window(self, start: float, end: float) -> Usage:
        """CPU used from about `start` to about `end` (epoch seconds; widened to samples)."""
        samples = self._samples
        t0, before = max((s for s in samples if s[0] <= start), key=_at, default=samples[0])
        t1, after = min((s for s in samples if s[0] >= end), key=_at, default=samples[-1])
        used = {p: v - before.get(p, 0.0) for p, v in after.items() if p != HOST}
        # Whatever else runs on the machine (other test runs, say) competes for the cores.
        used[OTHER] = after[HOST] - before[HOST] - sum(used.values())
        return used, t1 - t0


def _at(sample: tuple[float, dict[str, float]]) -> float:
    return sample[0]


def per_unit(usage: Usage, units: int, unit: str) -> str:
    """CPU milliseconds per unit of work by part, largest first, and the cores busy: how the
    versions of a side-by-side run compare on a host whose speed varies from day to day."""
    used, seconds = usage
    ours = sorted((p for p in used if p != OTHER and used[p] > 0), key=lambda p: -used[p])
    parts = ", ".join(f"{p} {used[p] * 1000 / max(units, 1):.2f}" for p in ours)
    busy = sum(used[p] for p in ours) / max(seconds, 1e-9)
    other = used[OTHER] / max(seconds, 1e-9)
    return f"CPU ms per {unit}: {parts}; cores busy {busy:.2f} (other processes {other:.2f})"


def host_line() -> str:
    """A header for a benchmark's output: the host, its load, and how fast it runs plain
    Python right now (these machines are shared: the same code ran 3-4 times slower on some
    days than on others, and the figures of one day compare only with each other)."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    began = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    speed = (time.perf_counter() - began) * 1000
    return (
        f"# {socket.gethostname()} · {os.cpu_count()} cpus · load average before: {load} · "
        f"2M-add Python loop {speed:.0f} ms"
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
