"""Services and a running platform for the benchmarks (real processes, loopback only)."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis

from infra import embedded
from infra.settings import Settings, load_settings
from infra.supervisor import Supervisor, supervised


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


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]
