"""The Execution aggregate: one run of a pinned workflow graph, step by step.

The orchestrator loads it, applies what runners reported (`record_success` /
`record_failure`, which ignore reports of superseded or unknown attempts, so a redelivered
result is harmless), then calls `advance`, which turns the pure decision into events. A task
reaches a runner only from a committed `StepScheduled` / `StepDispatched` that carries it.

Control nodes (if, switch, merge, stop, delay, loop, subworkflow) run here, in the
orchestrator; every other node is a task for a runner pool. What needs the world (credential
ciphertexts, another workflow's graph, artifact contents) comes through `Surroundings`, so the
aggregate stays a deterministic function of its events and those answers.
"""

from __future__ import annotations

import contextlib
import json
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from command_side.errors import Conflict
from command_side.execution.decide import (
    LOOP_RULE,
    Edge,
    Finish,
    Plan,
    Schedule,
    Skip,
    Step,
    decide,
    gave_up,
    retry_policy,
    split_loops,
    unrouted,
)
from command_side.workflow.node_types import LATEST_UNTIL, NODE_TYPES, SESSION_POOLS
from infra.templates import (
    MAX_RENDERED,
    TemplateFailed,
    render,
    size_of,
    step_references,
    template_names,
    truthy,
)

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")
INTERNAL = frozenset(
    {
        "control.if",
        "control.switch",
        "control.merge",
        "control.stop",
        "control.delay",
        "control.loop",
        "control.subworkflow",
    }
)
#: Node types the orchestrator completes itself as it begins them, for executions that record
#: them in `ExecutionStarted.inline_steps` (every execution started since 2026-12-04): the
#: rendered config is the whole of a `data.transform`, so a runner would only echo it back,
#: two Kafka hops later. Executions recorded before keep giving transforms to runners.
INLINE = ("data.transform",)
#: Config keys a runner renders itself, per item.
PER_ITEM = {"data.filter": ("condition",)}
LOOP_ITEM_NODE = "item"
#: `Execution.steps_scope`: only the steps upstream of a node, or (before 2026-12-04) all.
STEPS_UPSTREAM = "upstream"
STEPS_ALL = "all"
#: How long a dispatched task no runner has reported taking may wait before it is sent again.
QUEUE_TIMEOUT_S = 120.0
#: Deepest nesting of subworkflows and loops (a workflow calling itself stops here).
MAX_DEPTH = 8
#: Most content held by reference that the orchestrator reads into one merge's, loop's or
#: subworkflow's output (a loop of 10,000 items of 1 MB each would be 10 GB in its memory).
COMPOSE_LIMIT = 16 * 1024 * 1024
#: The largest task: it reaches runners as one Kafka message (brokers take about 1 MiB).
MAX_TASK_BYTES = 900_000


class StepProblem(Exception):
    """A step cannot start: a missing credential, workflow or bad value. Fails the step."""

    def __init__(self, error_type: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.retryable = retryable


@dataclass(frozen=True)
class Pinned:
    """A workflow version a child execution runs."""

    workflow_id: str
    version: int
    nodes: dict[str, dict[str, Any]]
    edges: list[dict[str, Any]]
    start: str


class Surroundings(Protocol):
    heartbeat_s: float
    step_timeout_s: float

    def resolve(self, workspace_id: str, value: Any) -> Any:
        """`value` with artifact references replaced by their content."""

    def keep(self, workspace_id: str, value: Any) -> Any:
        """An output as a step's event carries it, and as templates read it from then on,
        whether from memory or from the store: `value` through JSON (tuples become lists,
        keys text), or a reference to it in the artifact store when it is large;
        StepProblem("OutputError") when it is not JSON."""

    def credentials(self, workspace_id: str, names: list[str]) -> dict[str, dict[str, Any]]:
        """{name: {"kind", "ciphertext"}}; StepProblem when one does not exist."""

    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        """The published version (or `version`); StepProblem when there is none."""


class Isolated:
    """Surroundings with nothing in them: no credentials, no other workflows."""

    heartbeat_s = 2.0
    step_timeout_s = 3600.0

    def resolve(self, workspace_id: str, value: Any) -> Any:
        return value

    def keep(self, workspace_id: str, value: Any) -> Any:
        return as_json(value)[0]

    def credentials(self, workspace_id: str, names: list[str]) -> dict[str, dict[str, Any]]:
        if names:
            raise StepProblem("CredentialNotFound", f"no credential {names[0]!r}")
        return {}

    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        raise StepProblem("WorkflowNotFound", f"workflow {workflow_id} is not available")


@dataclass
class ChildSpec:
    """A child execution the orchestrator must create with its parent's events."""

    child_id: UUID
    workflow_id: str
    workflow_version: int
    nodes: dict[str, dict[str, Any]]
    edges: list[dict[str, Any]]
    start: str
    inputs: dict[str, Any]
    parent: dict[str, Any]
    trigger: dict[str, Any]
    outer_steps: dict[str, Any] = field(default_factory=dict)
    #: How the child's loops are split: its parent's for a loop's own body (split with the
    #: parent's graph), today's for another workflow (checked by today's rules).
    loop_rule: int = LOOP_RULE


def child_id(parent_id: UUID, node_id: str, attempt: int, index: int | None) -> UUID:
    return uuid5(NAMESPACE_URL, f"autoops:child:{parent_id}:{node_id}:{attempt}:{index}")


class Execution(Aggregate):
    @staticmethod
    def create_id(execution_id: UUID, **_: Any) -> UUID:
        return execution_id

    @event("ExecutionStarted")
    def __init__(
        self,
        execution_id: UUID,
        workflow_id: str,
        workflow_version: int,
        nodes: dict[str, dict[str, Any]],
        edges: list[dict[str, Any]],
        start: str,
        inputs: dict[str, Any],
        actor_id: str,
        workspace_id: str,
        vars: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
        parent: dict[str, Any] | None = None,
        retry_of: str | None = None,
        reused: dict[str, Any] | None = None,
        max_concurrency: int | None = None,
        timeout_s: float | None = None,
        outer_steps: dict[str, Any] | None = None,
        steps_scope: str = STEPS_ALL,
        inline_steps: list[str] | None = None,
        loop_rule: int = 1,
        reused_items: dict[str, Any] | None = None,
    ) -> None:
        self.workflow_id = workflow_id
        self.workflow_version = workflow_version
        self.graph: dict[str, Any] = {"nodes": nodes, "edges": edges}
        #: How its loop bodies were found (`decide.LOOP_RULE`; 1 for executions recorded
        #: before 2026-12-06, which keep the split they ran with).
        self.loop_rule = loop_rule
        outer_nodes, outer_edges, bodies = split_loops(
            nodes,
            [Edge(e["source"], e["target"], e.get("label"), e.get("condition")) for e in edges],
            loop_rule,
        )
        self.plan = Plan(outer_nodes, outer_edges, start, bodies)
        self.inputs = inputs
        self.vars = dict(vars or {})
        self.workspace_id = workspace_id
        self.trigger = trigger or {"kind": "manual"}
        self.parent = parent
        self.retry_of = retry_of
        self.reused = dict(reused or {})
        #: A retry from a loop step: that loop's items and body, and per index (a string) what
        #: its item that succeeded in the execution retried gave ({child_id, output}).
        self.reused_items = dict(reused_items or {})
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.outer_steps = dict(outer_steps or {})
        #: What a step's templates see of the others: STEPS_UPSTREAM for executions started
        #: since 2026-12-04; STEPS_ALL (every step succeeded so far) for those recorded before,
        #: which keep running and replaying as they were recorded.
        self.steps_scope = steps_scope
        #: Node types this execution completes in the orchestrator (INLINE since 2026-12-04;
        #: none for executions recorded before, which replay as they ran).
        self.inline_steps = frozenset(inline_steps or ())
        self.status = "QUEUED"
        self.error: str | None = None
        self.output: Any = None
        self.admitted_at: float | None = None
        self.steps: dict[str, Step] = {
            start: Step(
                status="succeeded", attempt=1, output=inputs, blocked=self._reused_verdicts(start)
            )
        }
        #: Loop/subworkflow node → item index (None for a subworkflow) → child record.
        self.children: dict[str, dict[int | None, dict[str, Any]]] = {}
        self.loop_items: dict[str, list[Any]] = {}
        #: Loop node → the indices of its items taken from the execution retried (sorted).
        self.items_reused: dict[str, list[int]] = {}
        #: Loop/subworkflow node → the indices of its children still running, and how many of
        #: its children ended other than SUCCEEDED (kept with `children`, so that a loop of
        #: many items is not counted over at each child's end).
        self.children_running: dict[str, set[int | None]] = {}
        self.children_unsuccessful: dict[str, int] = {}
        #: The graph each loop/subworkflow step's children run (pinned when it began).
        self.bodies: dict[str, Pinned] = {}
        #: Children decided but not created yet, and running children no longer waited for
        #: (not state: the orchestrator takes them after each decision).
        self.new_children: list[ChildSpec] = []
        self.children_to_cancel: list[str] = []
        #: Why, for those not cancelled because a sibling item failed.
        self.cancel_reasons: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def depth(self) -> int:
        return int((self.parent or {}).get("depth", 0))

    # -- admission ---------------------------------------------------------------------------

    def admit(self, now: float, actor_id: str, env: Surroundings | None = None) -> bool:
        """Start running a queued execution; False when it is not queued."""
        if self.status != "QUEUED":
            return False
        self._admitted(now, actor_id, self.workspace_id)
        for node_id, recorded in self.reused.items():
            if node_id in self.plan.nodes and node_id != self.plan.start:
                self._step_reused(
                    node_id,
                    recorded.get("output"),
                    recorded.get("branch"),
                    str(self.retry_of or ""),
                    actor_id,
                    self.workspace_id,
                    recorded.get("error"),
                )
        self.advance(now, actor_id, env)
        return True

    @event("ExecutionAdmitted")
    def _admitted(self, admitted_at: float, actor_id: str, workspace_id: str) -> None:
        self.status = "RUNNING"
        self.admitted_at = admitted_at

    @event("StepReused")
    def _step_reused(
        self,
        node_id: str,
        output: Any,
        branch: str | None,
        from_execution: str,
        actor_id: str,
        workspace_id: str,
        error: dict[str, Any] | None = None,
    ) -> None:
        """`error`: the step failed for good there (behind it, its `error` edge ran): it
        fails for good here too, without running again."""
        if error is not None:
            self.steps[node_id] = Step(
                "failed", 1, error={**error, "retryable": False}, started=True
            )
            return
        self.steps[node_id] = Step(
            "succeeded",
            1,
            output=output,
            branch=branch,
            started=True,
            blocked=self._reused_verdicts(node_id),
        )

    def _reused_verdicts(self, node_id: str) -> tuple[str, ...] | None:
        """The routes a reused step's conditions chose in the execution it comes from."""
        blocked = (self.reused.get(node_id) or {}).get("blocked")
        return None if blocked is None else tuple(blocked)

    # -- reports from runners ----------------------------------------------------------------

    def _current(self, node_id: str, attempt: int) -> bool:
        step = self.steps.get(node_id)
        return (
            self.status == "RUNNING"
            and step is not None
            and step.status == "scheduled"
            and step.attempt == attempt
        )

    def record_success(
        self,
        node_id: str,
        attempt: int,
        output: Any,
        branch: str | None,
        actor_id: str,
        runner_id: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
    ) -> bool:
        """False (and nothing recorded) for a report of an attempt that is not running."""
        if not self._current(node_id, attempt):
            return False
        self._step_succeeded(
            node_id,
            attempt,
            output,
            branch,
            runner_id,
            started_at,
            finished_at,
            actor_id,
            self.workspace_id,
        )
        return True

    @event("StepSucceeded")
    def _step_succeeded(
        self,
        node_id: str,
        attempt: int,
        output: Any,
        branch: str | None,
        runner_id: str | None,
        started_at: float | None,
        finished_at: float | None,
        actor_id: str,
        workspace_id: str,
        node_type: str | None = None,
        input: Any = None,
    ) -> None:
        """`node_type` is set when the orchestrator completed the step as it began it
        (INLINE): nothing was recorded of the attempt before. `input`: the rendered config,
        when the orchestrator completed the step (else what the attempt began with)."""
        step = self.steps.get(node_id)
        charged: int | None
        if node_type is not None or step is None:
            charged = _charged(step, attempt)
        else:
            charged, input = step.charged, step.input if input is None else input
        self.steps[node_id] = Step(
            "succeeded",
            attempt,
            output=output,
            branch=branch,
            charged=charged,
            input=input,
            started=True,
        )

    def record_failure(
        self,
        node_id: str,
        attempt: int,
        error_type: str,
        message: str,
        actor_id: str,
        retryable: bool = True,
        charged: bool = True,
        runner_id: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """`details`: what the failure left to look at (a page URL, a screenshot)."""
        if not self._current(node_id, attempt):
            return False
        step = self.steps[node_id]
        used = step.used - (0 if charged else 1)
        error = {"type": error_type, "message": message, "retryable": retryable}
        after = Step("failed", attempt, error=error, charged=used)
        final = gave_up(self.plan, node_id, after)
        dead_letter = (
            {"task": step.task, "error": error, "attempts": attempt}
            if final and step.task is not None
            else None
        )
        self._step_failed(
            node_id,
            attempt,
            error_type,
            message,
            retryable,
            charged,
            final,
            runner_id,
            started_at,
            finished_at,
            dead_letter,
            actor_id,
            self.workspace_id,
            details,
        )
        return True

    @event("StepFailed")
    def _step_failed(
        self,
        node_id: str,
        attempt: int,
        error_type: str,
        message: str,
        retryable: bool,
        charged: bool,
        final: bool,
        runner_id: str | None,
        started_at: float | None,
        finished_at: float | None,
        dead_letter: dict[str, Any] | None,
        actor_id: str,
        workspace_id: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        step = self.steps[node_id]
        error = {"type": error_type, "message": message, "retryable": retryable}
        error["charged"] = charged
        if details:
            error["details"] = details
        self.steps[node_id] = Step(
            "failed",
            attempt,
            error=error,
            charged=step.used - (0 if charged else 1),
            input=step.input,
            started=True,
        )

    # -- decisions ---------------------------------------------------------------------------

    def advance(self, now: float, actor_id: str, env: Surroundings | None = None) -> list[Schedule]:
        """Record what should happen now; returns the steps given to runners.

        Some decisions complete at once (a skip, a control node, a step that cannot start)
        and make more decisions possible, so this decides again until a round changes
        nothing that would let another decision follow: no runner report would come to wake
        it otherwise."""
        env = env or Isolated()
        dispatched: list[Schedule] = []
        self._top_up(actor_id)
        while self.status == "RUNNING":
            self._route(env, actor_id)
            progressed = False
            for action in decide(self.plan, self.steps, now):
                if isinstance(action, Finish):
                    self._finish_with(action)
                    progressed = False
                    break
                if isinstance(action, Skip):
                    self._step_skipped(action.node_id, actor_id, self.workspace_id)
                    progressed = True
                elif isinstance(action, Schedule):
                    progressed |= self._schedule(action, now, actor_id, env, dispatched)
            if not progressed:
                break
        return dispatched

    def _route(self, env: Surroundings, actor_id: str) -> None:
        """Evaluate the conditions of the edges leaving steps that just succeeded, once: in
        the templates' context, plus `output` (the step's own). A condition that cannot be
        evaluated fails the execution, naming the edge."""
        for node_id in unrouted(self.plan, self.steps):
            step = self.steps[node_id]
            context: dict[str, Any] | None = None
            blocked: list[str] = []
            error: str | None = None
            for edge in self.plan.outgoing(node_id):
                if edge.condition is None:
                    continue
                try:
                    if context is None:
                        context = self.template_context(env, node_id, including=True)
                        output = step.output
                        if node_id != self.plan.start:
                            output = env.resolve(self.workspace_id, output)
                        context["output"] = output
                except StepProblem as problem:
                    error = f"the condition of edge {node_id} → {edge.target}: {problem.message}"
                    break
                try:
                    taken = truthy(render(edge.condition, context))
                except TemplateFailed as exc:
                    error = f"the condition of edge {node_id} → {edge.target}: {exc}"
                    break
                except StepProblem as problem:  # an output in the artifact store is gone
                    error = f"the condition of edge {node_id} → {edge.target}: {problem.message}"
                    break
                if not taken:
                    blocked.append(edge.target)
            self._edges_routed(
                node_id, step.attempt, sorted(blocked), error, actor_id, self.workspace_id
            )

    @event("EdgesRouted")
    def _edges_routed(
        self,
        node_id: str,
        attempt: int,
        blocked: list[str],
        error: str | None,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        step = self.steps[node_id]
        step.blocked = tuple(blocked)
        step.routing_error = error

    def wake(self, now: float, actor_id: str, env: Surroundings | None = None) -> list[Schedule]:
        """Start the steps whose wait is over (retry backoff, delays), then advance."""
        env = env or Isolated()
        dispatched: list[Schedule] = []
        if self.status != "RUNNING":
            return dispatched
        for node_id, step in list(self.steps.items()):
            if step.status != "scheduled" or step.started or step.not_before > now:
                continue
            kind = self.plan.nodes[node_id]["type"]
            if kind == "control.delay":
                waited = (step.input or {}).get("seconds", 0)
                self._step_succeeded(
                    node_id,
                    step.attempt,
                    {"waited_s": waited},
                    None,
                    None,
                    step.not_before,
                    now,
                    actor_id,
                    self.workspace_id,
                )
            else:
                self._begin(node_id, step.attempt, now, actor_id, env, dispatched, waited=True)
        return dispatched + self.advance(now, actor_id, env)

    def _schedule(
        self,
        action: Schedule,
        now: float,
        actor_id: str,
        env: Surroundings,
        dispatched: list[Schedule],
    ) -> bool:
        """Record one scheduled step; True when it also completed at once."""
        node_id, attempt = action.node_id, action.attempt
        kind = self.plan.nodes[node_id]["type"]
        if action.not_before > now and kind != "control.delay":
            self._step_scheduled(
                node_id, kind, attempt, action.not_before, None, None, None, False,
                actor_id, self.workspace_id,
            )  # fmt: skip
            return False
        return self._begin(node_id, attempt, now, actor_id, env, dispatched, waited=False)

    def _begin(
        self,
        node_id: str,
        attempt: int,
        now: float,
        actor_id: str,
        env: Surroundings,
        dispatched: list[Schedule],
        waited: bool,
    ) -> bool:
        node = self.plan.nodes[node_id]
        kind = node["type"]
        try:
            config, scope = self._rendered(node_id, env)
        except TemplateFailed as exc:
            return self._cannot_start(
                node_id, kind, attempt, now, actor_id, waited,
                StepProblem("TemplateError", f"{node_id}.{exc.path}: {exc}"),
            )  # fmt: skip
        except StepProblem as problem:
            return self._cannot_start(node_id, kind, attempt, now, actor_id, waited, problem)
        if kind in INTERNAL:
            try:
                return self._run_control(node_id, kind, attempt, config, now, actor_id, env)
            except StepProblem as problem:
                return self._cannot_start(
                    node_id, kind, attempt, now, actor_id, waited, problem, config
                )
        if kind in self.inline_steps:
            try:
                output = env.keep(self.workspace_id, _inline_output(kind, config))
            except StepProblem as problem:
                return self._cannot_start(
                    node_id, kind, attempt, now, actor_id, waited, problem, config
                )
            # One event: its StepSucceeded carries what a StepScheduled would have (the type
            # and the rendered input). A retry that waited out its backoff has its
            # StepScheduled; the timer that ended the wait, not a decision, completes it.
            self._step_succeeded(
                node_id, attempt, output, None, None, now, now, actor_id, self.workspace_id,
                node_type=None if waited else kind, input=_public(config),
            )  # fmt: skip
            return True
        try:
            # Names come from the config as written, never from a template: whoever sends
            # the inputs must not choose which of the workspace's secrets a step gets.
            credentials = env.credentials(
                self.workspace_id, _credential_names(dict(node.get("config") or {}))
            )
        except StepProblem as problem:
            return self._cannot_start(
                node_id, kind, attempt, now, actor_id, waited, problem, config
            )
        task = self._task(
            node_id, kind, attempt, {**config, "scope": scope} if scope else config,
            credentials, now, env,
        )  # fmt: skip
        size = len(json.dumps(task, separators=(",", ":")))
        if size > MAX_TASK_BYTES:
            # It would never reach a runner (every send refused, attempt after attempt).
            too_large = StepProblem(
                "ConfigError",
                f"{node_id}'s rendered config makes a task of {size} bytes; a task travels "
                f"as one Kafka message of at most {MAX_TASK_BYTES} (pass large data as a file "
                "or an artifact, not in the config)",
            )
            return self._cannot_start(
                node_id, kind, attempt, now, actor_id, waited, too_large, config
            )
        if waited:
            self._step_dispatched(
                node_id, attempt, _public(config), task, actor_id, self.workspace_id
            )
        else:
            self._step_scheduled(
                node_id, kind, attempt, now, _public(config), task["pool"], task, True,
                actor_id, self.workspace_id,
            )  # fmt: skip
        dispatched.append(Schedule(node_id, attempt, now))
        return False

    def _cannot_start(
        self,
        node_id: str,
        kind: str,
        attempt: int,
        now: float,
        actor_id: str,
        waited: bool,
        problem: StepProblem,
        config: Any = None,
    ) -> bool:
        if not waited:
            self._step_scheduled(
                node_id, kind, attempt, now, _public(config), None, None, True,
                actor_id, self.workspace_id,
            )  # fmt: skip
        self.record_failure(
            node_id, attempt, problem.error_type, problem.message, actor_id,
            retryable=problem.retryable, started_at=now, finished_at=now,
        )  # fmt: skip
        return True

    def _rendered(
        self, node_id: str, env: Surroundings
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The node's config rendered, and what its per-item templates (rendered later, by the
        runner) read besides `item`, `index` and `vars` (None when nothing)."""
        node = self.plan.nodes[node_id]
        config = dict(node.get("config") or {})
        later = {k: config.pop(k) for k in PER_ITEM.get(node["type"], ()) if k in config}
        config.pop("notes", None)
        config.pop("retry", None)
        context = self.template_context(env, node_id)
        rendered = render(config, context)
        scope = None
        if later:
            rendered.update(later)
            rendered["vars"] = self.vars
            scope = _per_item_scope(node_id, later, context)
        return dict(rendered), scope

    def _visible(self, node_id: str) -> frozenset[str]:
        if self.steps_scope == STEPS_ALL:
            return frozenset(self.steps)
        return self.plan.upstream(node_id)

    def template_context(
        self, env: Surroundings, node_id: str, *, including: bool = False
    ) -> dict[str, Any]:
        """What `node_id`'s templates see: `steps` holds the outputs of the steps upstream of
        it (and its own when `including`, for its edges' conditions), plus those of the
        enclosing execution upstream of the loop or subworkflow step that started this one."""
        outputs = {
            n: {"output": env.resolve(self.workspace_id, (v or {}).get("output"))}
            for n, v in self.outer_steps.items()
        }
        visible = self._visible(node_id) | ({node_id} if including else set())
        for seen_id, step in self.steps.items():  # in the order they began, as always
            if seen_id not in visible:
                continue
            if step.status == "succeeded":
                output = step.output
                if seen_id != self.plan.start:  # inputs are the caller's: never a reference
                    output = env.resolve(self.workspace_id, output)
                outputs[seen_id] = {"output": output}
            elif (
                step.status == "failed"
                and step.error
                and self.steps_scope == STEPS_UPSTREAM
                and gave_up(self.plan, seen_id, step)
            ):
                # Upstream and failed for good: the node runs behind its `error` edge.
                error = {"type": step.error.get("type"), "message": step.error.get("message")}
                outputs[seen_id] = {"error": error}
        return {
            "inputs": self.inputs,
            "steps": outputs,
            "vars": self.vars,
            "execution": {
                "id": str(self.id),
                "workflow_id": self.workflow_id,
                "workflow_version": self.workflow_version,
                "started_at": self.admitted_at,
                "trigger": self.trigger,
            },
        }

    def _task(
        self,
        node_id: str,
        kind: str,
        attempt: int,
        config: dict[str, Any],
        credentials: dict[str, dict[str, Any]],
        now: float,
        env: Surroundings,
    ) -> dict[str, Any]:
        node = self.plan.nodes[node_id]
        timeout = float((node.get("config") or {}).get("timeout_s") or env.step_timeout_s)
        if self.timeout_s and self.admitted_at is not None:
            timeout = max(0.0, min(timeout, self.admitted_at + self.timeout_s - now))
        return {
            "task_id": f"{self.id}:{node_id}:{attempt}",
            "execution_id": str(self.id),
            "workspace_id": self.workspace_id,
            "workflow_id": self.workflow_id,
            "node_id": node_id,
            "node_type": kind,
            "attempt": attempt,
            "max_attempts": retry_policy(node).max_attempts,
            "pool": NODE_TYPES[kind].pool if kind in NODE_TYPES else "default",
            "config": config,
            "credentials": credentials,
            "timeout_s": timeout,
            "deadline": now + timeout,
            "heartbeat_s": env.heartbeat_s,
            "dispatched_at": now,
        }

    @event("StepScheduled")
    def _step_scheduled(
        self,
        node_id: str,
        node_type: str,
        attempt: int,
        not_before: float,
        input: Any,
        pool: str | None,
        task: dict[str, Any] | None,
        started: bool,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.steps[node_id] = Step(
            "scheduled",
            attempt,
            charged=_charged(self.steps.get(node_id), attempt),
            input=input,
            not_before=not_before,
            started=started,
            task=task,
            dispatched_at=not_before if task is not None else 0.0,
        )

    @event("StepDispatched")
    def _step_dispatched(
        self,
        node_id: str,
        attempt: int,
        input: Any,
        task: dict[str, Any],
        actor_id: str,
        workspace_id: str,
    ) -> None:
        step = self.steps[node_id]
        step.started = True
        step.task = task
        step.input = _public(task["config"])
        step.dispatched_at = float(task["dispatched_at"])

    @event("StepSkipped")
    def _step_skipped(self, node_id: str, actor_id: str, workspace_id: str) -> None:
        self.steps[node_id] = Step("skipped")

    # -- control nodes -----------------------------------------------------------------------

    def _run_control(
        self,
        node_id: str,
        kind: str,
        attempt: int,
        config: dict[str, Any],
        now: float,
        actor_id: str,
        env: Surroundings,
    ) -> bool:
        if kind == "control.delay":
            until = now + float(config.get("seconds") or 0)
            if config.get("until"):
                until = _epoch(config["until"])
            self._step_scheduled(
                node_id, kind, attempt, max(until, now), _public(config), None, None, False,
                actor_id, self.workspace_id,
            )  # fmt: skip
            return False
        if kind in ("control.loop", "control.subworkflow"):
            return self._start_children(node_id, kind, attempt, config, now, actor_id, env)
        merged: Any = None
        if kind == "control.merge":  # before anything is recorded: it can fail to compose
            merged = self._composed(
                env,
                {
                    e.source: self.steps[e.source].output
                    for e in self.plan.incoming(node_id)
                    if e.source in self.steps and self.steps[e.source].status == "succeeded"
                },
            )
        self._step_scheduled(
            node_id, kind, attempt, now, _public(config), None, None, True,
            actor_id, self.workspace_id,
        )  # fmt: skip
        branch: str | None = None
        if kind == "control.if":
            output: Any = truthy(config.get("condition"))
            branch = "true" if output else "false"
        elif kind == "control.switch":
            output = config.get("value")
            label = output if isinstance(output, str) else json.dumps(output)
            branch = label if label in (config.get("cases") or []) else "default"
        elif kind == "control.merge":
            output = merged
        else:  # control.stop
            output = {
                "outcome": config.get("outcome", "succeed"),
                "message": config.get("message"),
                "output": config.get("output"),
            }
        self._step_succeeded(
            node_id, attempt, output, branch, None, now, now, actor_id, self.workspace_id
        )
        return True

    def _start_children(
        self,
        node_id: str,
        kind: str,
        attempt: int,
        config: dict[str, Any],
        now: float,
        actor_id: str,
        env: Surroundings,
    ) -> bool:
        if self.depth + 1 > MAX_DEPTH:
            raise StepProblem("TooDeep", f"workflows nest deeper than {MAX_DEPTH} levels")
        if kind == "control.subworkflow":
            pinned = env.workflow(self.workspace_id, config["workflow_id"], config.get("version"))
            items: list[Any] = [config.get("inputs") or {}]
            problem = inputs_problem(pinned.nodes.get(pinned.start), items[0])
            if problem:
                raise StepProblem("InputsInvalid", f"{node_id}: the subworkflow's {problem}")
        else:
            items = config.get("items")  # type: ignore[assignment]
            if not isinstance(items, list):
                raise StepProblem(
                    "ConfigError", f"{node_id}.items must be a list, not {type(items).__name__}"
                )
            pinned = self._body(node_id, config, env)
            for index, item in enumerate(items):
                problem = inputs_problem(
                    pinned.nodes.get(pinned.start), {"item": item, "index": index}
                )
                if problem:
                    raise StepProblem("InputsInvalid", f"{node_id}: item {index}'s {problem}")
        self._step_scheduled(
            node_id, kind, attempt, now, _public(config), None, None, True,
            actor_id, self.workspace_id,
        )  # fmt: skip
        body = {
            "workflow_id": pinned.workflow_id,
            "version": pinned.version,
            "nodes": pinned.nodes,
            "edges": pinned.edges,
            "start": pinned.start,
        }
        self._loop_items(node_id, items, body, actor_id, self.workspace_id)
        if not items:
            self._step_succeeded(
                node_id, attempt, [], None, None, now, now, actor_id, self.workspace_id
            )
            return True
        done = self._done_before(node_id, kind, items, pinned)
        if done:
            self._items_reused(
                node_id, attempt, done, str(self.retry_of or ""), actor_id, self.workspace_id
            )
            if len(self.children[node_id]) == len(items):  # every one done before
                self._children_succeeded(node_id, attempt, now, actor_id, env)
                return True
        self._more_children(node_id, attempt, actor_id)
        return False

    def _done_before(self, node_id: str, kind: str, items: list[Any], body: Pinned) -> list[int]:
        """The items of a loop this retry starts from that succeeded in the execution retried
        (their side effects happened; their outputs are recorded), when they are the same
        items run by the same body (a `body_workflow_id` may have a newer version now)."""
        recorded = self.reused_items.get(node_id)
        if kind != "control.loop" or not recorded or recorded.get("items") != items:
            return []
        ran = recorded.get("body") or {}
        if (ran.get("workflow_id"), ran.get("version")) != (body.workflow_id, body.version):
            return []
        return sorted(int(index) for index in recorded.get("done") or {})

    def _body(self, node_id: str, config: dict[str, Any], env: Surroundings) -> Pinned:
        if config.get("body_workflow_id"):
            return env.workflow(self.workspace_id, config["body_workflow_id"], None)
        body = self.plan.bodies.get(node_id)
        if body is None:
            raise StepProblem("ConfigError", f"{node_id} has neither a body nor body_workflow_id")
        nodes: dict[str, dict[str, Any]] = {LOOP_ITEM_NODE: {"type": "trigger.manual"}}
        nodes.update({n: dict(spec) for n, spec in body.nodes.items()})
        edges = [
            {"source": e.source, "target": e.target, "label": e.label, "condition": e.condition}
            for e in body.edges
        ]
        edges += [{"source": LOOP_ITEM_NODE, "target": t, "label": None} for t in body.entries]
        return Pinned(self.workflow_id, self.workflow_version, nodes, edges, LOOP_ITEM_NODE)

    @event("LoopItems")
    def _loop_items(
        self,
        node_id: str,
        items: list[Any],
        body: dict[str, Any],
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.loop_items[node_id] = list(items)
        self.bodies[node_id] = Pinned(
            body["workflow_id"], body["version"], body["nodes"], body["edges"], body["start"]
        )
        self.children[node_id] = {}
        self.items_reused[node_id] = []
        self.children_running[node_id] = set()
        self.children_unsuccessful[node_id] = 0

    @event("ItemsReused")
    def _items_reused(
        self,
        node_id: str,
        attempt: int,
        indices: list[int],
        from_execution: str,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        """Items of a loop a retry starts from that succeeded in the execution retried: done
        here with the outputs recorded there (`reused_items`), their children not run again."""
        done = self.reused_items[node_id]["done"]
        records = self.children.setdefault(node_id, {})
        for index in indices:
            recorded = done[str(index)]
            records[index] = {
                "child_id": recorded.get("child_id"),
                "workflow_id": self.bodies[node_id].workflow_id,
                "workflow_version": self.bodies[node_id].version,
                "status": "SUCCEEDED",
                "output": recorded.get("output"),
                "error": None,
                "reused_from": from_execution,
            }
        self.items_reused[node_id] = sorted(indices)

    def _composed(self, env: Surroundings, value: Any) -> Any:
        """An output made of other steps' outputs (a merge's, a loop's, a subworkflow's),
        with the artifact references inside it replaced by their content, then kept like any
        output (by reference when large): templates read a reference only at the top. Past
        COMPOSE_LIMIT of referenced content it keeps the references as they are."""
        if referenced_bytes(value) > COMPOSE_LIMIT:
            return env.keep(self.workspace_id, value)
        return env.keep(self.workspace_id, resolved_within(env, self.workspace_id, value))

    def _top_up(self, actor_id: str) -> None:
        """Start the next items of the loops (and subworkflows) whose children are all
        running or done: a decision like any other, so that a replay makes it too."""
        for node_id, records in self.children.items():
            step = self.steps.get(node_id)
            if (
                step is not None
                and step.started
                and self._current(node_id, step.attempt)
                and len(records) < len(self.loop_items.get(node_id, ()))
                and not self.children_unsuccessful.get(node_id)
            ):
                self._more_children(node_id, step.attempt, actor_id)

    def _more_children(self, node_id: str, attempt: int, actor_id: str) -> None:
        """Start children up to the loop's concurrency."""
        pinned = self.bodies[node_id]
        kind = self.plan.nodes[node_id]["type"]
        config = self.steps[node_id].input or {}
        limit = int(config.get("concurrency") or 1) if kind == "control.loop" else 1
        own_body = kind == "control.loop" and not config.get("body_workflow_id")
        items = self.loop_items[node_id]
        records = self.children[node_id]
        running = len(self.children_running.get(node_id, ()))
        reused = self.items_reused.get(node_id) or []
        # Items start in order, skipping those a retry took over.
        started = len(records) - len(reused)
        while running < limit:
            index = _nth_free(started, reused)
            if index >= len(items):
                break
            started += 1
            key: int | None = index if kind == "control.loop" else None
            cid = child_id(self.id, node_id, attempt, key)
            if kind == "control.loop":
                inputs = {"item": items[index], "index": index}
                trigger = {"kind": "loop", "node_id": node_id}
            else:
                inputs = dict(items[0])
                trigger = {"kind": "subworkflow", "node_id": node_id}
            self._child_started(
                node_id, attempt, key, str(cid), pinned.workflow_id, pinned.version,
                actor_id, self.workspace_id,
            )  # fmt: skip
            # What the loop or subworkflow step itself sees (see template_context).
            visible = self._visible(node_id)
            # Recorded before the upstream rule: a child saw its parent's steps only.
            outer = dict(self.outer_steps) if self.steps_scope == STEPS_UPSTREAM else {}
            outer.update(
                (n, {"output": s.output})
                for n, s in self.steps.items()
                if s.status == "succeeded" and n in visible
            )
            self.new_children.append(
                ChildSpec(
                    cid,
                    pinned.workflow_id,
                    pinned.version,
                    pinned.nodes,
                    pinned.edges,
                    pinned.start,
                    inputs,
                    {
                        "execution_id": str(self.id),
                        "node_id": node_id,
                        "attempt": attempt,
                        "index": key,
                        "depth": self.depth + 1,
                    },
                    trigger,
                    outer if kind == "control.loop" and pinned.start == LOOP_ITEM_NODE else {},
                    self.loop_rule if own_body else LOOP_RULE,
                )
            )
            running += 1

    @event("ChildStarted")
    def _child_started(
        self,
        node_id: str,
        attempt: int,
        index: int | None,
        child_id: str,
        workflow_id: str,
        workflow_version: int,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        self.children.setdefault(node_id, {})[index] = {
            "child_id": child_id,
            "workflow_id": workflow_id,
            "workflow_version": workflow_version,
            "status": "RUNNING",
            "output": None,
            "error": None,
        }
        self.children_running.setdefault(node_id, set()).add(index)

    def child_finished(
        self,
        node_id: str,
        attempt: int,
        index: int | None,
        child: str,
        status: str,
        output: Any,
        error: str | None,
        now: float,
        actor_id: str,
        env: Surroundings | None = None,
    ) -> bool:
        """A child execution ended; False when that child is not one this step waits for."""
        record = self.children.get(node_id, {}).get(index)
        if (
            not self._current(node_id, attempt)
            or record is None
            or record["child_id"] != child
            or record["status"] != "RUNNING"
        ):
            return False
        self._child_finished(
            node_id, attempt, index, child, status, output, error, actor_id, self.workspace_id
        )
        records = self.children[node_id]
        if status != "SUCCEEDED":
            self.children_to_cancel += [
                r["child_id"] for r in records.values() if r["status"] == "RUNNING"
            ]
            where = f"item {index}" if index is not None else "subworkflow"
            self.record_failure(
                node_id, attempt, "ChildFailed", f"{where} {status.lower()}: {error}", actor_id,
                retryable=status != "CANCELLED", started_at=None, finished_at=now,
            )  # fmt: skip
        elif len(records) == len(self.loop_items[node_id]) and all(
            r["status"] == "SUCCEEDED" for r in records.values()
        ):
            self._children_succeeded(node_id, attempt, now, actor_id, env)
        self.advance(now, actor_id, env)  # which starts the next items, if any
        return True

    def _children_succeeded(
        self, node_id: str, attempt: int, now: float, actor_id: str, env: Surroundings | None
    ) -> None:
        """Every child of a loop or subworkflow step succeeded: the step's output is theirs
        (a loop's, in item order)."""
        records = self.children[node_id]
        kind = self.plan.nodes[node_id]["type"]
        if kind == "control.loop":
            result: Any = [records[i]["output"] for i in range(len(records))]
        else:
            result = records[None]["output"]
        try:
            result = self._composed(env or Isolated(), result)
        except StepProblem as problem:
            self.record_failure(
                node_id, attempt, problem.error_type, problem.message, actor_id,
                retryable=problem.retryable, started_at=None, finished_at=now,
            )  # fmt: skip
        else:
            self._step_succeeded(
                node_id, attempt, result, None, None, None, now, actor_id, self.workspace_id
            )

    @event("ChildFinished")
    def _child_finished(
        self,
        node_id: str,
        attempt: int,
        index: int | None,
        child_id: str,
        status: str,
        output: Any,
        error: str | None,
        actor_id: str,
        workspace_id: str,
    ) -> None:
        record = self.children[node_id][index]
        if record["status"] == "RUNNING":
            self.children_running.get(node_id, set()).discard(index)
        if status != "SUCCEEDED":
            self.children_unsuccessful[node_id] = self.children_unsuccessful.get(node_id, 0) + 1
        record.update(status=status, output=output, error=error)

    def running_children(self) -> list[str]:
        return [
            self.children[node_id][index]["child_id"]
            for node_id, running in self.children_running.items()
            for index in sorted(running, key=lambda i: -1 if i is None else i)
        ]

    # -- the end -----------------------------------------------------------------------------

    def _finish_with(self, action: Finish) -> None:
        status = action.status
        step = self.steps.get(action.node_id or "")
        if status == "FAILED" and step and (step.error or {}).get("type") == "StepTimeout":
            status = "TIMED_OUT"
        # Steps still running when it ends (a stop node beside a running branch, a failure
        # elsewhere) are told to stop: their side effects are no longer wanted.
        self._finished(
            status, action.error, self._output(action), "orchestrator", self.workspace_id,
            self._running_tasks() or None, self._session_pools(),
        )  # fmt: skip

    def _output(self, action: Finish) -> Any:
        step = self.steps.get(action.node_id or "")
        said = step.output if step is not None and isinstance(step.output, dict) else {}
        if "outcome" in said and said.get("output") is not None:
            return said["output"]
        sources = {e.source for e in self.plan.edges if e.label != "error"}
        return {
            n: s.output
            for n, s in self.steps.items()
            if s.status == "succeeded" and n not in sources and n != self.plan.start
        }

    def _running_tasks(self) -> list[str]:
        return [
            str(s.task["task_id"])
            for s in self.steps.values()
            if s.status == "scheduled" and s.task is not None
        ]

    @event("ExecutionFinished")
    def _finished(
        self,
        status: str,
        error: str | None,
        output: Any,
        actor_id: str,
        workspace_id: str,
        abandoned: list[str] | None = None,
        sessions: list[str] | None = None,
    ) -> None:
        """`sessions`: the pools that keep a session for the execution's steps (browser,
        desktop) and ran some of them: their runners close it when they hear of the end."""
        self.status = status
        self.error = error
        self.output = output

    def _session_pools(self) -> list[str] | None:
        kinds = {
            self.plan.nodes[node_id]["type"]
            for node_id, step in self.steps.items()
            if step.status != "skipped" and node_id in self.plan.nodes
        }
        used = {NODE_TYPES[kind].pool for kind in kinds if kind in NODE_TYPES}
        return sorted(used & SESSION_POOLS) or None

    def cancel(self, reason: str, actor_id: str) -> None:
        if self.finished:
            raise Conflict(f"the execution is {self.status} already", current_version=self.version)
        self._finished(
            "CANCELLED", reason, None, actor_id, self.workspace_id, self._running_tasks(),
            self._session_pools(),
        )  # fmt: skip

    def refuse(self, reason: str, actor_id: str) -> None:
        """A start that cannot run (see `ExecutionService.record_refused`): FAILED before it
        was admitted, no step run."""
        if self.status == "QUEUED":
            self._finished("FAILED", reason, None, actor_id, self.workspace_id)

    def time_out(self, message: str, actor_id: str) -> None:
        if not self.finished:
            self._finished(
                "TIMED_OUT", message, None, actor_id, self.workspace_id, self._running_tasks(),
                self._session_pools(),
            )  # fmt: skip

    def fail_internally(self, message: str) -> None:
        """End an execution the orchestrator cannot move forward (a bug, not the workflow's
        fault): FAILED with the reason, rather than stalling every execution beside it."""
        if not self.finished:
            self._finished(
                "FAILED", f"internal error: {message}", None, "orchestrator", self.workspace_id,
                self._running_tasks(), self._session_pools(),
            )  # fmt: skip

    # -- timers ------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        if self.timeout_s and self.admitted_at is not None:
            return self.admitted_at + self.timeout_s
        return None

    def next_wake(
        self,
        heartbeat_timeout_s: float,
        heard: dict[str, float],
        queue_timeout_s: float = QUEUE_TIMEOUT_S,
        watched_since: float = 0.0,
        queued: dict[str, float] | None = None,
    ) -> float | None:
        """When the orchestrator must look at this execution again without a report.
        `queued`: "<node>:<attempt>" → when its task, never heard of, was last found still
        waiting in its topic (no runner took it)."""
        if self.finished:
            return None
        times = [t for t in [self.deadline()] if t is not None]
        for node_id, step in self.steps.items():
            if step.status != "scheduled":
                continue
            if not step.started:
                times.append(step.not_before)
            elif (waiting := self._children_deadline(node_id, step)) is not None:
                times.append(waiting)
            elif step.task is not None:
                deadline = float(step.task["deadline"])
                # A step a runner took is looked at a heartbeat after its deadline (its runner
                # reports the timeout itself): a look at the deadline would find nothing to
                # do, again and again until then.
                taken = f"{node_id}:{step.attempt}" in heard
                times.append(deadline + heartbeat_timeout_s if taken else deadline)
                lapse = _lapse(
                    step, node_id, heard, heartbeat_timeout_s, queue_timeout_s, watched_since,
                    queued,
                )  # fmt: skip
                times.append(lapse)
        return min(times) if times else None

    def overdue(
        self,
        now: float,
        heartbeat_timeout_s: float,
        heard: dict[str, float],
        queue_timeout_s: float = QUEUE_TIMEOUT_S,
        watched_since: float = 0.0,
        queued: dict[str, float] | None = None,
    ) -> None:
        """Fail what ran out of time: the execution, steps past their deadline, and steps
        whose runner stopped sending heartbeats (a new attempt follows, uncharged).
        `queued` as in `next_wake`."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline and self.status == "RUNNING":
            self.time_out(f"the execution ran longer than {self.timeout_s} s", "orchestrator")
            return
        for node_id, step in list(self.steps.items()):
            waiting = self._children_deadline(node_id, step)
            if waiting is not None and now >= waiting:
                # Its children are stopped with it: nothing waits for what they would return.
                timeout = waiting - step.not_before
                for record in self.children.get(node_id, {}).values():
                    if record["status"] == "RUNNING":
                        self.children_to_cancel.append(record["child_id"])
                        self.cancel_reasons[record["child_id"]] = (
                            f"{node_id} ran longer than {timeout:g} s"
                        )
                self.record_failure(
                    node_id, step.attempt, "StepTimeout",
                    f"{node_id} ran longer than {timeout:g} s", "orchestrator",
                )  # fmt: skip
                continue
            if step.status != "scheduled" or step.task is None:
                continue
            task = step.task
            deadline = float(task["deadline"])
            lapse = _lapse(
                step, node_id, heard, heartbeat_timeout_s, queue_timeout_s, watched_since,
                queued,
            )  # fmt: skip
            taken = f"{node_id}:{step.attempt}" in heard
            # Past its deadline a step has timed out, unless a runner took it and has gone
            # quiet since: that runner reports its own timeout at the deadline if it lives,
            # and if it was killed, the lapse below gives the step an uncharged attempt (a
            # short `timeout_s` must not turn a killed runner into a charged failure). A
            # runner that lives and stays silent about it is timed out a heartbeat later.
            timed_out = not taken or now >= deadline + heartbeat_timeout_s
            if now >= deadline and timed_out and now < lapse:
                self.record_failure(
                    node_id, step.attempt, "StepTimeout",
                    f"{node_id} ran longer than {task['timeout_s']:g} s", "orchestrator",
                )  # fmt: skip
                continue
            if now >= lapse:
                self.record_failure(
                    node_id, step.attempt, "HeartbeatTimeout",
                    f"no word from the runner of {node_id} for {heartbeat_timeout_s:g} s",
                    "orchestrator", retryable=True, charged=False,
                )  # fmt: skip

    def _children_deadline(self, node_id: str, step: Step) -> float | None:
        """When a loop or subworkflow step waiting for its children times out: its node's
        `timeout_s` after it began (only when set: a loop over many items may rightly take
        long, and each child's steps have their own timeouts)."""
        if step.status != "scheduled" or not step.started or step.task is not None:
            return None
        node = self.plan.nodes.get(node_id) or {}
        if node.get("type") not in ("control.loop", "control.subworkflow"):
            return None
        timeout = (node.get("config") or {}).get("timeout_s")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            return None
        return step.not_before + float(timeout)


def _lapse(
    step: Step,
    node_id: str,
    heard: dict[str, float],
    heartbeat_s: float,
    queue_s: float,
    watched_since: float = 0.0,
    queued: dict[str, float] | None = None,
) -> float:
    """When a running step counts as lost: a heartbeat timeout after its runner was last
    heard of; a task never heard of may be waiting in its topic behind busy runners, so it
    gets the (longer) queue timeout from its dispatch, or from when it was last found still
    waiting there (`queued`). Heartbeats are heard by whoever watches the execution, from
    `watched_since` (an orchestrator that took it over, or restarted, knows of none before):
    a step is never lost before a heartbeat timeout of watching."""
    key = f"{node_id}:{step.attempt}"
    last = heard.get(key)
    if last is None:
        since = max(step.dispatched_at, (queued or {}).get(key, 0.0))
        return max(since + max(queue_s, heartbeat_s), watched_since + heartbeat_s)
    return max(last, step.dispatched_at, watched_since) + heartbeat_s


def _nth_free(n: int, taken: list[int]) -> int:
    """The index of the n-th (from 0) item not in `taken` (sorted): the n-th to start."""
    lo, hi = n, n + len(taken)
    while lo < hi:
        mid = (lo + hi) // 2
        if mid + 1 - bisect_right(taken, mid) > n:  # more than n free indices up to mid
            hi = mid
        else:
            lo = mid + 1
    return lo


def _charged(previous: Step | None, attempt: int) -> int:
    """Attempts charged against the retry budget once `attempt` of a step begins."""
    if previous is not None and previous.attempt == attempt:
        return previous.used
    return (previous.used + 1) if previous and previous.attempt else 1


def referenced_bytes(value: Any) -> int:
    """The size of the content `value` holds by artifact reference, at any depth."""
    if isinstance(value, dict):
        if "$artifact" in value:
            ref = value["$artifact"]
            size = ref.get("size") if isinstance(ref, dict) else None
            return size if isinstance(size, int) and size > 0 else 0
        return sum(referenced_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(referenced_bytes(v) for v in value)
    return 0


def resolved_within(env: Surroundings, workspace_id: str, value: Any) -> Any:
    """`value` with every artifact reference in it, at any depth, replaced by its content."""
    if isinstance(value, dict):
        if "$artifact" in value:
            return env.resolve(workspace_id, value)
        return {k: resolved_within(env, workspace_id, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved_within(env, workspace_id, v) for v in value]
    return value


def _inline_output(kind: str, config: dict[str, Any]) -> Any:
    """The output of an INLINE step from its rendered config (as its runner would give it)."""
    if kind == "data.transform":
        fields = config.get("fields") or {}
        if not isinstance(fields, dict):
            raise StepProblem("ConfigError", "fields must be an object")
        return fields
    raise StepProblem("ConfigError", f"{kind} does not run in the orchestrator")


def as_json(value: Any) -> tuple[Any, int]:
    """`value` as it reads back from JSON, and its size as JSON in bytes; StepProblem
    ("OutputError") when it is not JSON (the check a runner makes of what a step returned)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StepProblem("OutputError", f"the output is not JSON: {exc}") from None
    return json.loads(text), len(text.encode())


def _credential_names(config: dict[str, Any]) -> list[str]:
    names = []
    if isinstance(config.get("credential"), str):
        names.append(config["credential"])
    auth = config.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("credential"), str):
        names.append(auth["credential"])
    return names


#: The most a task carries for its per-item templates (`scope`): like a rendered value.
MAX_SCOPE = MAX_RENDERED


def _per_item_scope(
    node_id: str, per_item: dict[str, Any], context: dict[str, Any]
) -> dict[str, Any] | None:
    """The `inputs`, `execution` and `steps.<id>` per-item templates read (steps named in
    them; one looked up by a computed key is not there), from the context the rest of the
    config was rendered with, so the task does not carry every output upstream."""
    names = template_names(per_item) & {"inputs", "execution", "steps"}
    if not names:
        return None
    scope = {name: context[name] for name in names if name != "steps"}
    if "steps" in names:
        read = {step for _, step in step_references(per_item)}
        scope["steps"] = {k: v for k, v in context["steps"].items() if k in read}
    if size_of(scope, MAX_SCOPE) > MAX_SCOPE:
        keys = ", ".join(sorted(per_item))
        raise StepProblem(
            "ConfigError",
            f"{node_id}.{keys} reads more than {MAX_SCOPE} bytes of inputs and step outputs "
            "(each item sees them): pick what it needs in a data.transform before it",
        )
    return scope


def inputs_problem(trigger: Any, inputs: Any) -> str | None:
    """What is wrong with `inputs` for a trigger node's `inputs_schema`, None when nothing is
    (or it declares none)."""
    schema = ((trigger or {}).get("config") or {}).get("inputs_schema")
    if not schema:
        return None
    try:
        errors = sorted(Draft202012Validator(schema).iter_errors(inputs), key=str)
    except SchemaError as exc:
        return f"the trigger's inputs_schema is invalid: {exc.message}"
    if not errors:
        return None
    where = ".".join(str(p) for p in errors[0].absolute_path)
    return f"inputs{'.' + where if where else ''}: {errors[0].message}"


def _public(config: Any) -> Any:
    """The rendered config as recorded and shown (it holds credential names, never values)."""
    return config


def _epoch(value: Any) -> float:
    """A delay's `until`: epoch seconds (a number, or text that reads as one) or ISO 8601
    (UTC when it names no zone), up to `LATEST_UNTIL`."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):
            seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except (ValueError, OverflowError):
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                seconds = moment.timestamp()
    if seconds is not None and math.isfinite(seconds) and 0 <= seconds <= LATEST_UNTIL:
        return seconds
    raise StepProblem(
        "ConfigError",
        f"until: {value!r} is neither an ISO 8601 time nor epoch seconds up to year 9999",
    )
