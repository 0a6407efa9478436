"""The whole platform as separate processes on real services, for end-to-end tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from infra import embedded
from infra.settings import Settings, load_settings
from infra.supervisor import Supervisor, supervised
from tests.waiting import http_answer, wait_until

_redis_db = itertools.count(1)


def redis_db(url: str) -> str:
    """The same server, another database index, so heartbeats of two stacks never mix."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{next(_redis_db) % 16}"))


@dataclass
class Stack:
    settings: Settings
    supervisor: Supervisor

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def wait_ready(self, timeout: float = 60) -> dict[str, object]:
        last: list[object] = [None]

        def ready() -> dict[str, object] | None:
            response = http_answer("GET", f"{self.url}/health/ready")
            last[0] = response and response.text
            return response.json() if response and response.status_code == 200 else None

        try:
            return wait_until(ready, timeout, "stack ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {last[0]}") from None


def stack_settings(
    database_url: str, bootstrap: str, redis_url: str, data_dir: Path, **extra: str
) -> Settings:
    env = {
        "AUTOOPS_DATABASE_URL": database_url,
        "AUTOOPS_KAFKA_BOOTSTRAP": bootstrap,
        "AUTOOPS_REDIS_URL": redis_url,
        "AUTOOPS_DATA_DIR": str(data_dir),
        "AUTOOPS_API_PORT": str(embedded.free_port()),
        "AUTOOPS_KAFKA_GROUP_TIMEOUT_MS": "3000",
        "AUTOOPS_RELAY_POLL_INTERVAL_S": "0.2",
        "AUTOOPS_LOG_LEVEL": "WARNING",
        "AUTOOPS_BCRYPT_COST": "4",  # tests sign up often; the default (12) is tested apart
        # Every test client shares 127.0.0.1: the per-address throttle is tested apart.
        "AUTOOPS_LOGIN_MAX_FAILURES_PER_ADDRESS": "10000",
        # Low enough that a test can go past it (one test's workspace sends the webhooks).
        "AUTOOPS_WEBHOOK_RATE_PER_S": "20",
        **extra,
    }
    return load_settings(env)


@contextmanager
def running_stack(
    settings: Settings,
    processes: tuple[str, ...] = ("relay", "projector", "api"),
) -> Iterator[Stack]:
    with supervised(settings, processes) as supervisor:
        yield Stack(settings, supervisor)
