"""The task contract as the runner checks it (pure: no broker)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from runners.worker import MalformedTask, parse_task

GOOD: dict[str, Any] = {
    "task_id": "e:n:1",
    "execution_id": "e",
    "workspace_id": "w",
    "node_id": "n",
    "node_type": "data.transform",
    "attempt": 1,
    "config": {},
    "credentials": {"api": {"kind": "http_bearer", "ciphertext": "token"}},
    "timeout_s": 5.0,
    "deadline": 1764000000.0,
    "heartbeat_s": 0.5,
}


def test_a_task_of_the_contract_is_accepted_with_its_deadline_and_heartbeat() -> None:
    job = parse_task(json.dumps(GOOD).encode(), 3600.0, 2.0)
    assert (job.deadline, job.heartbeat_s) == (1764000000.0, 0.5)


def test_missing_timings_come_from_the_settings() -> None:
    task = {k: v for k, v in GOOD.items() if k not in ("deadline", "heartbeat_s", "timeout_s")}
    before = time.time()
    job = parse_task(json.dumps(task).encode(), 60.0, 2.0)
    assert before + 60 <= job.deadline <= time.time() + 60
    assert job.heartbeat_s == 2.0


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**GOOD, "task_id": ""}).encode(), "task_id"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "node_type"}).encode(), "node_type"),
        (json.dumps({**GOOD, "attempt": True}).encode(), "attempt"),
        (json.dumps({**GOOD, "attempt": 0}).encode(), "attempt"),
        (json.dumps({**GOOD, "config": []}).encode(), "config"),
        (json.dumps({**GOOD, "credentials": {"api": "token"}}).encode(), "credentials"),
        (json.dumps({**GOOD, "deadline": "soon"}).encode(), "deadline"),
        (json.dumps({**GOOD, "heartbeat_s": 0}).encode(), "heartbeat_s"),
        (json.dumps({**GOOD, "timeout_s": float("inf")}).encode(), "timeout_s"),
    ],
)
def test_a_malformed_task_is_refused_naming_the_problem(raw: bytes, says: str) -> None:
    with pytest.raises(MalformedTask, match=says):
        parse_task(raw, 3600.0, 2.0)
