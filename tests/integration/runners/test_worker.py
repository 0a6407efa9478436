"""The runner against real Tansu and a local HTTP server: results, duplicates, dead letters,
heartbeats, cancellation, deadlines, graceful hand-back and large outputs."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.fernet import Fernet
from kafka import KafkaConsumer, TopicPartition

from infra import artifacts, kafka
from infra.secrets import Vault
from infra.settings import Settings
from runners import worker
from runners.nodes import dispatch
from runners.worker import Runner, StuckSteps
from tests.waiting import wait_until

WORKSPACE = str(uuid.uuid4())
RESULT_FIELDS = {
    "kind",
    "task_id",
    "execution_id",
    "node_id",
    "attempt",
    "runner_id",
    "ok",
    "output",
    "error",
    "started_at",
    "finished_at",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: dict[str, int]
    gates: dict[str, threading.Event]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        _, kind, name = [*self.path.split("?")[0].split("/"), ""][:3]
        self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        if kind == "block":  # answers once the test opens the gate
            self.server.gates.setdefault(name, threading.Event()).wait(30)
        if kind == "status":
            self._answer(int(name), {"failed": True})
        else:
            self._answer(200, {"path": self.path, "auth": self.headers.get("Authorization")})

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


class HttpServer:
    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hits, self._server.gates = {}, {}
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def hits(self, path: str) -> int:
        return self._server.hits.get(path, 0)

    def gate(self, name: str) -> threading.Event:
        return self._server.gates.setdefault(name, threading.Event())

    def close(self) -> None:
        for gate in list(self._server.gates.values()):
            gate.set()
        self._server.shutdown()
        self._server.server_close()


class Topic:
    """Every message of a topic from now on, read by a thread without a group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5)
        partitions = self._consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        self._consumer.seek_to_end(*tps)
        for tp in tps:
            self._consumer.position(tp)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=50).values():
                for r in records:
                    self.messages.append(json.loads(r.value) | {"_key": (r.key or b"").decode()})
        self._consumer.close()

    def of(self, execution_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in list(self.messages)
            if m.get("execution_id") == execution_id and kind in (None, m["kind"])
        ]

    def wait(self, execution_id: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_until(
            lambda: len(self.of(execution_id, kind)) >= count and self.of(execution_id, kind),
            15,
            f"{count} {kind} message(s) of {execution_id}",
            every=0.02,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def make_task(node_type: str, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    execution_id = fields.pop("execution_id", None) or str(uuid.uuid4())
    node_id = fields.pop("node_id", "step")
    return {
        "task_id": f"{execution_id}:{node_id}:1",
        "execution_id": execution_id,
        "workspace_id": WORKSPACE,
        "workflow_id": str(uuid.uuid4()),
        "node_id": node_id,
        "node_type": node_type,
        "attempt": 1,
        "max_attempts": 3,
        "config": config,
        "credentials": {},
        "timeout_s": 30.0,
        "deadline": time.time() + 30,
        "heartbeat_s": 2.0,
        "dispatched_at": time.time(),
    } | fields


@dataclasses.dataclass
class Harness:
    runner: Runner
    pool: str
    stop: threading.Event
    thread: threading.Thread
    producer: kafka.KafkaProducer
    settings: Settings

    def send(self, *tasks: dict[str, Any] | bytes, topic: str | None = None) -> None:
        for task in tasks:
            value = task if isinstance(task, bytes) else json.dumps(task).encode()
            key = task.get("execution_id", "x") if isinstance(task, dict) else "x"
            self.producer.send(topic or kafka.tasks_topic(self.pool), key=key.encode(), value=value)
        self.producer.flush(10)


@pytest.fixture(scope="module")
def broker(kafka_session: Any) -> str:
    bootstrap: str = kafka_session.url
    kafka.ensure_topics(bootstrap, 4)
    return bootstrap


@pytest.fixture
def settings(broker: str, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=broker,
        data_dir=tmp_path,
        artifact_dir=tmp_path / "artifacts",
        credentials_key=Fernet.generate_key().decode(),
        kafka_group_timeout_ms=2000,
        runner_shutdown_grace_s=1.0,
        output_inline_limit=1024,
    )


@pytest.fixture
def http() -> Iterator[HttpServer]:
    server = HttpServer()
    yield server
    server.close()


@pytest.fixture
def results(broker: str) -> Iterator[Topic]:
    topic = Topic(broker, kafka.RESULTS_TOPIC)
    yield topic
    topic.close()


@pytest.fixture
def start_runner(
    settings: Settings, broker: str, http: HttpServer
) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []
    producer = kafka.make_producer(broker, "test-worker")

    def start(concurrency: int = 4, pool: str | None = None, **overrides: Any) -> Harness:
        pool = pool or f"test-{uuid.uuid4().hex[:8]}"
        kafka.ensure_topics(broker, 4, [kafka.tasks_topic(pool)])
        custom = dataclasses.replace(settings, **overrides)
        runner = Runner(custom, pool, concurrency)
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        harness = Harness(runner, pool, stop, thread, producer, custom)
        started.append(harness)
        wait_until(runner.ready.is_set, 20, "the runner joined its group", every=0.02)
        return harness

    yield start
    for gate in list(http._server.gates.values()):
        gate.set()
    for harness in started:
        harness.stop.set()
    for harness in started:
        harness.thread.join(20)
        assert not harness.thread.is_alive()
    producer.close()


def test_every_task_gets_one_result_of_the_documented_shape(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer
) -> None:
    runner = start_runner()
    transform = make_task("data.transform", {"fields": {"answer": 42}})
    keep = make_task("data.filter", {"items": [1, 5, 9], "condition": "{{ item > 2 }}"})
    fetch = make_task("http.request", {"url": f"{http.url}/json"})
    failing = make_task("http.request", {"url": f"{http.url}/status/503"})
    runner.send(transform, keep, fetch, failing)

    outcomes = {}
    for task in (transform, keep, fetch, failing):
        [message] = results.wait(task["execution_id"], "result")
        assert set(message) - {"_key"} == RESULT_FIELDS
        assert message["_key"] == task["execution_id"]
        assert message["task_id"] == task["task_id"]
        assert (message["node_id"], message["attempt"]) == ("step", 1)
        assert message["runner_id"] == runner.runner.runner_id
        assert message["started_at"] <= message["finished_at"]
        outcomes[task["node_type"], message["ok"]] = (message["output"], message["error"])
    assert outcomes["data.transform", True] == ({"answer": 42}, None)
    assert outcomes["data.filter", True] == ({"items": [5, 9], "count": 2}, None)
    output, _ = outcomes["http.request", True]
    assert (output["status"], output["body"]["path"]) == (200, "/json")
    assert outcomes["http.request", False][1]["type"] == "HttpStatusError"
    assert outcomes["http.request", False][1]["retryable"] is True


def test_credentials_are_decrypted_for_the_step_and_redacted_from_its_output(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer
) -> None:
    runner = start_runner()
    vault = Vault.from_settings(runner.settings)
    token = "s3cret-token-value"
    good = {"kind": "http_bearer", "ciphertext": vault.encrypt("http_bearer", {"token": token})}
    config = {"url": f"{http.url}/json", "auth": {"credential": "api"}}
    authed = make_task("http.request", config, credentials={"api": good})
    broken = make_task(
        "http.request", config, credentials={"api": {"kind": "http_bearer", "ciphertext": "x"}}
    )
    runner.send(authed, broken)

    [ok] = results.wait(authed["execution_id"], "result")
    assert ok["ok"] is True
    assert ok["output"]["body"]["auth"] == "Bearer ***"
    [failed] = results.wait(broken["execution_id"], "result")
    assert failed["error"]["type"] == "CredentialError"
    assert failed["error"]["retryable"] is False
    assert http.hits("/json") == 1  # the step with a broken credential never ran


def test_a_task_id_taken_already_is_dropped(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer
) -> None:
    runner = start_runner(concurrency=1)  # one step at a time: `after` runs once the rest did
    task = make_task("http.request", {"url": f"{http.url}/count/dup"})
    after = make_task(
        "data.transform", {"fields": {}}, execution_id=task["execution_id"], node_id="after"
    )
    runner.send(task, task, after)  # one key: one partition, in this order

    results.wait(task["execution_id"], "result", 2)
    assert (
        len([m for m in results.of(task["execution_id"], "result") if m["node_id"] == "step"]) == 1
    )
    assert http.hits("/count/dup") == 1


def test_a_malformed_message_goes_to_the_dead_letter_topic_and_the_runner_goes_on(
    start_runner: Callable[..., Harness], results: Topic, broker: str
) -> None:
    runner = start_runner()
    dlq = Topic(broker, kafka.DLQ_TOPIC)
    try:
        good = make_task("data.transform", {"fields": {"still": "working"}})
        wrong_type = make_task("data.transform", {"fields": {}}) | {"attempt": "one"}
        runner.send(b"{not json", wrong_type, good)

        [message] = results.wait(good["execution_id"], "result")
        assert message["output"] == {"still": "working"}
        dead = wait_until(lambda: len(dlq.messages) >= 2 and dlq.messages, 10, "two dead letters")
        by_raw = {d["raw"]: d for d in dead}  # different keys: partitions, so order, differ
        assert set(by_raw) == {"{not json", json.dumps(wrong_type)}
        assert "not JSON" in by_raw["{not json"]["error"]["message"]
        assert "attempt" in by_raw[json.dumps(wrong_type)]["error"]["message"]
        for letter in dead:
            assert letter["kind"] == "malformed_task"
            assert letter["topic"] == kafka.tasks_topic(runner.pool)
            assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)
        assert results.of(wrong_type["execution_id"]) == []
    finally:
        dlq.close()


def test_a_long_step_heartbeats_until_a_cancel_stops_it(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer, broker: str
) -> None:
    runner = start_runner()
    task = make_task("http.request", {"url": f"{http.url}/block/long"}, heartbeat_s=0.2)
    runner.send(task)

    beats = results.wait(task["execution_id"], "heartbeat", 3)
    assert set(beats[0]) - {"_key"} == {
        "kind",
        "task_id",
        "execution_id",
        "node_id",
        "attempt",
        "runner_id",
    }
    cancel = {"kind": "cancel", "execution_id": task["execution_id"], "task_id": None}
    runner.send(cancel, topic=kafka.CONTROL_TOPIC)

    [message] = results.wait(task["execution_id"], "result")
    assert message["ok"] is False
    assert message["error"]["type"] == "Cancelled"
    assert message["error"]["retryable"] is False
    wait_until(lambda: runner.runner.busy == 0, 5, "the cancelled step returned")


def test_a_cancel_sent_before_the_runner_started_still_stops_its_task(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer, broker: str
) -> None:
    task = make_task("http.request", {"url": f"{http.url}/ok/never"})
    producer = kafka.make_producer(broker, "test-early-cancel")
    try:
        cancel = {"kind": "cancel", "execution_id": task["execution_id"], "task_id": None}
        producer.send(
            kafka.CONTROL_TOPIC,
            key=task["execution_id"].encode(),
            value=json.dumps(cancel).encode(),
        )
        producer.flush(10)
    finally:
        producer.close()
    runner = start_runner()
    runner.send(task)

    [message] = results.wait(task["execution_id"], "result")
    assert message["ok"] is False
    assert message["error"]["type"] == "Cancelled"
    assert http.hits("/ok/never") == 0


def test_a_step_still_running_at_its_deadline_reports_step_timeout(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer
) -> None:
    runner = start_runner()
    late = make_task("data.transform", {"fields": {}}, deadline=time.time() - 1)
    # Time enough for the runner to reach it on a loaded machine: it must start, then time out.
    slow = make_task("http.request", {"url": f"{http.url}/block/slow"}, deadline=time.time() + 4)
    runner.send(late, slow)

    for task in (late, slow):
        [message] = results.wait(task["execution_id"], "result")
        assert message["error"]["type"] == "StepTimeout"
        assert message["error"]["retryable"] is True
    assert http.hits("/block/slow") == 1


def test_with_every_slot_busy_the_next_task_waits_for_a_free_one(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer
) -> None:
    runner = start_runner(concurrency=1)
    first = make_task("http.request", {"url": f"{http.url}/block/first"}, heartbeat_s=0.2)
    second = make_task("data.transform", {"fields": {"n": 2}})
    runner.send(first)
    results.wait(first["execution_id"], "heartbeat")  # running: the only slot is taken
    runner.send(second)
    results.wait(first["execution_id"], "heartbeat", 4)  # group membership holds meanwhile
    assert results.of(second["execution_id"]) == []

    http.gate("first").set()
    [done] = results.wait(second["execution_id"], "result")
    assert done["output"] == {"n": 2}
    [message] = results.of(first["execution_id"], "result")
    assert message["ok"] is True


def test_tasks_a_busy_runner_did_not_take_run_on_the_next_runner(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer
) -> None:
    first_runner = start_runner(concurrency=1)
    blocked = make_task("http.request", {"url": f"{http.url}/block/held"}, heartbeat_s=0.2)
    waiting = make_task("data.transform", {"fields": {"ran": "later"}})
    first_runner.send(blocked)
    results.wait(blocked["execution_id"], "heartbeat")
    first_runner.send(waiting)
    results.wait(blocked["execution_id"], "heartbeat", 3)

    first_runner.stop.set()
    results.wait(blocked["execution_id"], "handback")
    first_runner.thread.join(10)
    assert results.of(waiting["execution_id"]) == []  # never taken, so not handed back either

    start_runner(pool=first_runner.pool)
    [done] = results.wait(waiting["execution_id"], "result")
    assert done["output"] == {"ran": "later"}
    assert results.of(blocked["execution_id"], "result") == []  # taken once, handed back


def test_a_runner_whose_every_slot_holds_a_stuck_step_leaves_its_partitions(
    start_runner: Callable[..., Harness],
    results: Topic,
    settings: Settings,
    broker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step that ignores its deadline (a library call that never returns) is reported
    timed out, but its thread holds the slot: once every slot is held so for a while, the
    runner leaves (its supervisor starts a fresh process) and the next runner of the pool
    takes the tasks."""
    release = threading.Event()

    def stubborn(config: dict[str, Any], ctx: Any) -> dict[str, Any]:
        release.wait(60)  # never looks at ctx.cancelled
        return {"late": True}

    monkeypatch.setitem(dispatch.EXECUTORS, "test.stubborn", stubborn)
    monkeypatch.setattr(worker, "ABANDONED_AFTER_S", 0.5)
    pool = f"test-{uuid.uuid4().hex[:8]}"
    kafka.ensure_topics(broker, 4, [kafka.tasks_topic(pool)])
    runner = Runner(settings, pool, 1)
    stop, raised = threading.Event(), []

    def run() -> None:
        try:
            runner.run(stop)
        except StuckSteps as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(runner.ready.is_set, 20, "the runner joined its group", every=0.02)
        task = make_task("test.stubborn", {}, timeout_s=0.3, deadline=time.time() + 0.3)
        producer = kafka.make_producer(broker, "test-stuck")
        producer.send(kafka.tasks_topic(pool), key=b"x", value=json.dumps(task).encode())
        producer.flush(10)
        producer.close()
        [timed_out] = results.wait(task["execution_id"], "result")
        assert timed_out["error"]["type"] == "StepTimeout"
        thread.join(20)
        assert not thread.is_alive() and isinstance(raised[0], StuckSteps)

        follower = start_runner(pool=pool)
        after = make_task("data.transform", {"fields": {"ok": True}})
        follower.send(after)
        [done] = results.wait(after["execution_id"], "result")
        assert done["output"] == {"ok": True}
        assert len(results.of(task["execution_id"], "result")) == 1  # reported once
    finally:
        release.set()
        stop.set()


def test_stopping_hands_back_a_blocked_step_within_the_grace_period(
    start_runner: Callable[..., Harness], results: Topic, http: HttpServer
) -> None:
    runner = start_runner()
    task = make_task("http.request", {"url": f"{http.url}/block/stuck"}, heartbeat_s=0.2)
    runner.send(task)
    results.wait(task["execution_id"], "heartbeat")

    began = time.monotonic()
    runner.stop.set()
    [handback] = results.wait(task["execution_id"], "handback")
    runner.thread.join(10)
    took = time.monotonic() - began
    assert not runner.thread.is_alive()
    assert (
        runner.settings.runner_shutdown_grace_s
        <= took
        < runner.settings.runner_shutdown_grace_s + 5
    )
    assert handback["task_id"] == task["task_id"]
    assert results.of(task["execution_id"], "result") == []


def test_a_large_output_arrives_as_an_artifact_reference(
    start_runner: Callable[..., Harness], results: Topic
) -> None:
    runner = start_runner()
    fields = {"rows": [{"i": i, "text": "x" * 40} for i in range(100)]}
    task = make_task("data.transform", {"fields": fields})
    runner.send(task)

    [message] = results.wait(task["execution_id"], "result")
    assert artifacts.is_ref(message["output"])
    assert message["output"]["$artifact"]["media_type"] == "application/json"
    store = artifacts.from_settings(runner.settings)
    assert store.resolve(WORKSPACE, message["output"]) == fields


def test_a_runner_with_redis_reports_its_own_heartbeat(
    start_runner: Callable[..., Harness], redis_url: str
) -> None:
    runner = start_runner(redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    key = f"autoops:heartbeat:runner:{runner.pool}:{runner.runner.runner_id}"
    try:
        beat = wait_until(
            lambda: (raw := client.get(key)) and json.loads(raw)["kafka"] == "up" and raw,
            10,
            "the runner's heartbeat",
        )
        assert json.loads(beat)["pool"] == runner.pool
    finally:
        client.close()


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no Debian chromium")
def test_a_browser_runner_keeps_a_session_per_execution_until_it_is_released(
    start_runner: Callable[..., Harness], results: Topic
) -> None:
    harness = start_runner(pool="browser")
    sessions = harness.runner._sessions
    assert sessions is not None
    kept, released = make_task("browser.open", {}), make_task("browser.open", {})
    harness.send(kept, released)
    for task in (kept, released):
        [message] = results.wait(task["execution_id"], "result")
        assert message["ok"], message
    assert sessions.has_session(kept["execution_id"])
    release = {"kind": "release", "execution_id": released["execution_id"], "pools": ["browser"]}
    harness.send(release, topic=kafka.CONTROL_TOPIC)
    wait_until(lambda: not sessions.has_session(released["execution_id"]), 10, "released")
    assert sessions.has_session(kept["execution_id"])
    harness.stop.set()
    harness.thread.join(30)
    assert not sessions.has_session(kept["execution_id"])  # a stopping runner closes them all
