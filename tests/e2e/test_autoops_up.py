"""`autoops up` on a machine with no services configured: everything embedded, one command."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from infra import embedded
from infra.settings import load_settings
from tests.graphql_client import PASSWORD, REGISTER
from tests.stack import Stack, redis_db
from tests.waiting import http_answer, wait_until

pytestmark = pytest.mark.slow
SIGN_UP = {
    "email": "first@example.com",
    "password": PASSWORD,
    "displayName": "First",
    "workspaceName": "Home",
}


USER_OPS = (
    "--email",
    "ops@example.com",
    "--role",
    "owner",
    "--workspace",
    "Ops",
    "--password-stdin",
)


def start_up(tmp_path: Path, **settings: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """`autoops up` in a clean environment: only the AUTOOPS_* variables given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOOPS_")}
    env |= {
        "AUTOOPS_DATA_DIR": str(tmp_path / "data"),
        "AUTOOPS_API_PORT": str(embedded.free_port()),
        "AUTOOPS_KAFKA_GROUP_TIMEOUT_MS": "3000",
        "AUTOOPS_LOG_LEVEL": "WARNING",
        **settings,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, env


def test_up_starts_everything_embedded_and_ctrl_c_leaves_no_orphans(tmp_path: Path) -> None:
    proc, env = start_up(tmp_path)
    url = f"http://127.0.0.1:{env['AUTOOPS_API_PORT']}"
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode(errors="replace") for line in proc.stdout),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        # It says how other commands reach what it embedded, and they do.
        exports = wait_until(
            lambda: next((ln for ln in lines if ln.startswith("Embedded services")), None),
            90,
            "the embedded services' URLs",
        )
        urls = dict(pair.split("=", 1) for pair in shlex.split(exports.split("export ", 1)[1]))
        assert set(urls) == {"AUTOOPS_DATABASE_URL", "AUTOOPS_KAFKA_BOOTSTRAP", "AUTOOPS_REDIS_URL"}
        created = subprocess.run(
            [sys.executable, "-m", "infra.cli", "user", "create", *USER_OPS],
            input=b"a long enough password\n",
            env=env | urls,
            capture_output=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr.decode()
        assert b"is owner of workspace" in created.stdout
        ready = wait_until(
            lambda: (r := http_answer("GET", f"{url}/health/ready")) and r.status_code == 200 and r,
            90,
            "autoops up ready",
        )
        assert set(ready.json()["components"]) == {
            "postgres",
            "redis",
            "kafka",
            "relay",
            "projector",
        }
        registered = httpx.post(
            f"{url}/graphql",
            json={"query": REGISTER, "variables": {"i": SIGN_UP}},
            timeout=30,
        )
        token = registered.json()["data"]["register"]["accessToken"]
        auth = {"authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{url}/graphql",
            json={"query": 'mutation { createWorkflow(input: {name: "hello"}) { workflowId } }'},
            headers=auth,
            timeout=30,
        )
        wid = created.json()["data"]["createWorkflow"]["workflowId"]
        query = f'{{ workflow(id: "{wid}", atLeastVersion: 1) {{ name }} }}'

        def shown() -> str | None:  # the server waits 2 s at most; a cold projector may not
            answer = httpx.post(
                f"{url}/graphql", json={"query": query}, headers=auth, timeout=30
            ).json()
            if answer.get("errors"):  # only "not projected yet" is worth asking again
                codes = [e["extensions"]["code"] for e in answer["errors"]]
                assert codes == ["UNAVAILABLE"], answer
                return None
            return str(answer["data"]["workflow"]["name"])

        assert wait_until(shown, 30, "the workflow in the read model") == "hello"

        def workers() -> dict[str, object] | None:
            found = httpx.get(f"{url}/health/ready").json().get("workers") or {}
            up = found.get("orchestrator") == found.get("scheduler") == "up"
            return found if up and (found.get("runners") or {}).get("default") == 1 else None

        # Workflows run under `up` alone: its orchestrator, scheduler and default runner.
        wait_until(workers, 60, "the orchestrator, the scheduler and a default runner reporting")

        def gql(query: str, **variables: object) -> dict[str, object] | None:
            """The answer's data; None for UNAVAILABLE (a projector, just started, further
            behind than the api's read wait)."""
            answer = httpx.post(
                f"{url}/graphql",
                json={"query": query, "variables": variables},
                headers=auth,
                timeout=30,
            ).json()
            codes = [e.get("extensions", {}).get("code") for e in answer.get("errors", [])]
            if codes == ["UNAVAILABLE"]:
                return None
            assert not codes, answer
            return dict(answer["data"])

        add = "mutation($i: AddNodeInput!) { addNode(input: $i) { nodeId } }"
        gql(add, i={"workflowId": wid, "nodeId": "go", "type": "trigger.manual", "config": {}})
        keep = {"items": "{{ inputs.rows }}", "condition": "{{ item > 1 }}"}
        gql(add, i={"workflowId": wid, "nodeId": "keep", "type": "data.filter", "config": keep})
        gql(
            "mutation($i: ConnectNodesInput!) { connectNodes(input: $i) { edgeId } }",
            i={"workflowId": wid, "sourceId": "go", "targetId": "keep"},
        )
        gql(
            "mutation($i: PublishWorkflowInput!) { publishWorkflow(input: $i) { versionNumber } }",
            i={"workflowId": wid},
        )
        started = gql(
            "mutation($i: StartExecutionInput!) { startExecution(input: $i) { executionId } }",
            i={"workflowId": wid, "inputs": {"rows": [1, 2, 3]}},
        )
        execution_id = started["startExecution"]["executionId"]  # type: ignore[index]

        def finished() -> dict[str, object] | None:
            answer = gql(
                "query($id: ID!) { execution(id: $id) { status steps { nodeId output } } }",
                id=execution_id,
            )
            found = answer and answer["execution"]
            done = isinstance(found, dict) and found["status"] not in ("QUEUED", "RUNNING")
            return found if done else None  # type: ignore[return-value]

        execution = wait_until(finished, 60, "the execution finished")
        assert execution["status"] == "SUCCEEDED", execution
        (kept,) = [s for s in execution["steps"] if s["nodeId"] == "keep"]  # type: ignore[attr-defined]
        assert kept["output"] == {"items": [2, 3], "count": 2}
        assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
        # The embedded default signs tokens with a secret it generated and keeps privately.
        assert (tmp_path / "data" / "jwt-secret").stat().st_mode & 0o777 == 0o600
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 5
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 0, output
    _gone, alive = psutil.wait_procs(family, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    postgres = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path / "data" / "postgres") in " ".join(p.info["cmdline"] or [])
    ]
    assert postgres == []


def test_up_uses_the_services_it_is_given_and_embeds_none(
    database_url: str, kafka_session: embedded.Service, redis_url: str, tmp_path: Path
) -> None:
    proc, env = start_up(
        tmp_path,
        AUTOOPS_DATABASE_URL=database_url,
        AUTOOPS_KAFKA_BOOTSTRAP=kafka_session.url,
        AUTOOPS_REDIS_URL=redis_db(redis_url),
    )
    try:
        Stack(load_settings(env), supervisor=None).wait_ready(90)  # type: ignore[arg-type]
        children = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children()]
        assert not any("tansu" in c or "redis-server" in c for c in children), children
        assert not (tmp_path / "data" / "postgres").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
