"""The admin client leaves nothing behind when it cannot reach the broker: every reconnect
loop (a runner's, the orchestrator's, the relay's) makes one per try during an outage."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from kafka.errors import KafkaError

from infra import kafka


def test_an_admin_client_that_cannot_reach_the_broker_leaves_no_thread_behind() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = threading.active_count()
    for _ in range(3):
        with pytest.raises(KafkaError):
            kafka.AdminClient(bootstrap_servers=f"127.0.0.1:{port}", bootstrap_timeout_ms=200)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
