from __future__ import annotations

from pathlib import Path

import httpx

from infra import embedded
from tests.graphql_client import PASSWORD, REGISTER
from tests.stack import redis_db, running_stack, stack_settings
from tests.waiting import http_answer, wait_until


def test_ready_is_503_and_names_what_is_down_until_every_component_is_up(
    database_url: str, kafka_session: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(database_url, kafka_session.url, redis_db(redis_url), tmp_path)
    with running_stack(settings, ("api",)) as stack:
        wait_until(lambda: http_answer("GET", f"{stack.url}/health/live"), 30, "api live")
        ready = httpx.get(f"{stack.url}/health/ready", timeout=5)
        assert ready.status_code == 503
        body = ready.json()
        assert body["down"] == ["kafka", "projector", "relay"]
        assert body["components"]["postgres"] == "up"
        metrics = httpx.get(f"{stack.url}/metrics", timeout=5)
        assert metrics.status_code == 200 and "python_info" in metrics.text


def test_production_refuses_anonymous_and_unsigned_callers(
    database_url: str, kafka_session: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(
        database_url,
        kafka_session.url,
        redis_db(redis_url),
        tmp_path,
        AUTOOPS_ENV="production",
        AUTOOPS_JWT_SECRET="a-production-secret-of-more-than-32-bytes",
        AUTOOPS_CREDENTIALS_KEY="ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=",
        AUTOOPS_BCRYPT_COST="12",
        AUTOOPS_ALLOW_SIGNUP="false",
    )
    query = {"query": "{ workflows { nodes { id } } }"}
    with running_stack(settings, ("api",)) as stack:
        anonymous = wait_until(
            lambda: http_answer("POST", f"{stack.url}/graphql", json=query), 60, "api answers"
        )
        assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        # The development-era identity headers mean nothing: only a signed token does.
        named = httpx.post(
            f"{stack.url}/graphql",
            json=query,
            headers={"x-autoops-workspace": "w1", "x-autoops-actor": "a1"},
            timeout=5,
        )
        assert named.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert named.json()["data"] is None
        sign_up = httpx.post(
            f"{stack.url}/graphql",
            json={
                "query": REGISTER,
                "variables": {
                    "i": {
                        "email": "x@example.com",
                        "password": PASSWORD,
                        "displayName": "X",
                        "workspaceName": "X",
                    }
                },
            },
            timeout=5,
        )
        assert sign_up.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_relay_and_projector_run_at_a_lower_cpu_priority_than_the_api(
    database_url: str, kafka_session: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    settings = stack_settings(
        database_url, kafka_session.url, redis_db(redis_url), tmp_path, AUTOOPS_BACKGROUND_NICE="6"
    )
    with running_stack(settings, ("relay", "projector", "api")) as stack:
        stack.wait_ready()  # every process is past its start-up (heartbeats)
        children = stack.supervisor.children
        niceness = {name: _thread_niceness(child.pid) for name, child in children.items()}
        assert all(child.poll() is None for child in children.values())
        assert stack.supervisor.restarts == 0  # the processes read are the ones that started
    (api,) = niceness["api"]
    assert niceness["relay"] == niceness["projector"] == {min(api + 6, 19)}


def _thread_niceness(pid: int) -> set[int]:
    """The niceness of every thread of a process (on Linux it is per thread)."""
    found = set()
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            line = stat.read_text()
        except OSError:  # a thread that ended meanwhile
            continue
        # Fields after the command name (in parentheses, which may hold spaces): the 19th
        # field of the line, niceness, is the 17th of these.
        found.add(int(line.rsplit(")", 1)[1].split()[16]))
    return found
