"""Commands on executions and credentials: what the api, webhooks and the cron scheduler call.

Starting an execution pins a workflow version, checks the whole graph and the inputs, and
appends `ExecutionStarted` (QUEUED); the orchestrator takes it from there.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from command_side.errors import Conflict, NotFound, ValidationFailed
from command_side.execution.aggregate import (
    INLINE,
    STEPS_UPSTREAM,
    Execution,
    Isolated,
    Pinned,
    StepProblem,
    inputs_problem,
    resolved_within,
)
from command_side.execution.credentials import KINDS, Credential, credential_id
from command_side.execution.decide import LOOP_RULE, Edge, gave_up
from command_side.execution.store import ExecutionStore
from command_side.execution.variables import Variables, variables_id
from command_side.store import WorkflowStore
from command_side.workflow.aggregate import Workflow
from command_side.workflow.graph_check import check_graph

RACE_RETRIES = 8
#: Published graphs by (workflow, aggregate version), with what stops them from running:
#: published versions never change, so each is loaded and checked once.
_PUBLISHED: OrderedDict[tuple[UUID, int], tuple[Pinned, list[Any]]] = OrderedDict()


#: Workflows as last loaded, checked against the store's latest version before each use.
_WORKFLOWS: OrderedDict[UUID, Workflow] = OrderedDict()
#: Workspace variables as last loaded, checked the same way.
_VARIABLES: OrderedDict[UUID, Variables] = OrderedDict()


def _fresh(recorder: Any, cache: OrderedDict[UUID, Any], aggregate_id: UUID, load: Any) -> Any:
    """The aggregate as stored now (None: no events): the cached copy when the store has
    nothing newer, one indexed read instead of a snapshot and the events after it."""
    latest = recorder.select_events(aggregate_id, desc=True, limit=1)
    if not latest:
        return None
    cached = cache.get(aggregate_id)
    if cached is None or cached.version != latest[0].originator_version:
        cached = load(aggregate_id)
        cache[aggregate_id] = cached
        while len(cache) > 2000:
            cache.popitem(last=False)
    return cached


def _verdicts(blocked: tuple[str, ...] | None) -> list[str] | None:
    return None if blocked is None else list(blocked)


def _checked(pinned: Pinned) -> tuple[Pinned, list[Any]]:
    edges = [(e["source"], e["target"], e.get("label")) for e in pinned.edges]
    conditions = {
        (e["source"], e["target"]): e["condition"] for e in pinned.edges if e.get("condition")
    }
    return pinned, check_graph(pinned.nodes, edges, conditions)


@dataclass(frozen=True)
class Divergence:
    node_id: str
    expected: str
    actual: str


@dataclass
class ReplayReport:
    execution_id: str
    status: str
    replayed_steps: int
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def deterministic(self) -> bool:
        return not self.divergences


class ExecutionService:
    def __init__(self, executions: ExecutionStore, workflows: WorkflowStore) -> None:
        self.executions = executions
        self.workflows = workflows
        self._batch = threading.local()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Work done together (the starts of one group commit, the executions of one
        orchestrator batch) looks each workflow, workspace's variables and credential up
        once: as if the batch were done that instant."""
        self._batch.memo = {}
        try:
            yield
        finally:
            self._batch.memo = None

    def _memo(self) -> dict[Any, Any] | None:
        return getattr(self._batch, "memo", None)

    # -- workflows as executions see them ----------------------------------------------------

    def pinned(
        self, workspace_id: str, workflow_id: str, version: int | None, draft: bool = False
    ) -> Pinned:
        """The graph of a published version (the latest unless given), or the current draft."""
        return self._pinned(workspace_id, workflow_id, version, draft)[0]

    def checked(
        self, workspace_id: str, workflow_id: str, version: int | None
    ) -> tuple[Pinned, list[Any]]:
        """A published version (the latest unless given) and what `validateWorkflow` finds
        wrong with it: what a subworkflow or loop body about to run is checked against."""
        return self._pinned(workspace_id, workflow_id, version, False)

    def _pinned(
        self, workspace_id: str, workflow_id: str, version: int | None, draft: bool
    ) -> tuple[Pinned, list[Any]]:
        try:
            wid = UUID(str(workflow_id))
        except ValueError:
            raise NotFound(f"workflow {workflow_id} does not exist") from None
        workflow = self._current(wid)
        if workflow.workspace_id != workspace_id:
            raise NotFound(f"workflow {workflow_id} does not exist")
        if draft:
            graph, number = workflow, 0
        else:
            if not workflow.published:
                raise ValidationFailed(
                    f"workflow {workflow_id} has no published version; publish it or run the draft",
                    field="version",
                )
            number = version if version is not None else len(workflow.published)
            if not 1 <= number <= len(workflow.published):
                raise NotFound(f"workflow {workflow_id} has no published version {number}")
            aggregate_version = workflow.published[number - 1]["version"]
            known = _PUBLISHED.get((wid, aggregate_version))
            if known is not None:
                return known
            graph = self.workflows.load(wid, version=aggregate_version)
        assert isinstance(graph, Workflow)
        nodes = {
            n: {"type": v["type"], "config": dict(v["config"])} for n, v in graph.nodes.items()
        }
        edges = [
            {
                "source": e["source"],
                "target": e["target"],
                "label": e.get("label"),
                "condition": e.get("condition"),
            }
            for e in graph.edges.values()
        ]
        found = _checked(Pinned(str(wid), number, nodes, edges, ""))
        if not draft:
            _PUBLISHED[(wid, graph.version)] = found
            while len(_PUBLISHED) > 2000:
                _PUBLISHED.popitem(last=False)
        return found

    def _current(self, wid: UUID) -> Workflow:
        """The workflow as stored now."""
        workflow = self._once_per_batch(
            wid, lambda: _fresh(self.workflows.recorder, _WORKFLOWS, wid, self.workflows.load)
        )
        if workflow is None:
            raise NotFound(f"workflow {wid} does not exist")
        return workflow  # type: ignore[no-any-return]

    def _once_per_batch(self, key: UUID, look_up: Callable[[], Any]) -> Any:
        memo = self._memo()
        if memo is None:
            return look_up()
        if key not in memo:
            memo[key] = look_up()
        return memo[key]

    # -- starting ----------------------------------------------------------------------------

    def start(
        self,
        workspace_id: str,
        actor_id: str,
        workflow_id: str,
        inputs: Mapping[str, Any] | None,
        *,
        version: int | None = None,
        draft: bool = False,
        trigger: Mapping[str, Any] | None = None,
        start_node: str | None = None,
        execution_id: UUID | None = None,
    ) -> UUID:
        """Queue an execution; VALIDATION naming the nodes when the graph cannot run."""
        execution = self.prepare(
            workspace_id, actor_id, workflow_id, inputs, version=version, draft=draft,
            trigger=trigger, start_node=start_node, execution_id=execution_id,
        )  # fmt: skip
        self._save_new(execution)
        return execution.id

    def prepare(
        self,
        workspace_id: str,
        actor_id: str,
        workflow_id: str,
        inputs: Mapping[str, Any] | None,
        *,
        version: int | None = None,
        draft: bool = False,
        trigger: Mapping[str, Any] | None = None,
        start_node: str | None = None,
        execution_id: UUID | None = None,
    ) -> Execution:
        """The new execution, checked, not yet saved."""
        pinned, problems = self._pinned(workspace_id, workflow_id, version, draft)
        if problems:
            listed = "; ".join(p.message for p in problems)
            raise ValidationFailed(f"the workflow cannot run: {listed}", field="workflowId")
        trigger = dict(trigger or {"kind": "manual"})
        start = start_node or self._start_node(pinned, trigger["kind"])
        inputs = dict(inputs or {})
        self._check_inputs(pinned.nodes[start], inputs)
        return self._new(workspace_id, actor_id, pinned, start, inputs, trigger, execution_id)

    def record_refused(
        self,
        workspace_id: str,
        actor_id: str,
        workflow_id: str,
        inputs: Mapping[str, Any],
        reason: str,
        *,
        trigger: Mapping[str, Any],
        start_node: str,
        execution_id: UUID,
    ) -> UUID:
        """Record a start a trigger made that could not run (a cron fire of a published
        version that no longer validates, or whose inputs it refuses) as an execution FAILED
        before any step, with `reason`: seen where executions are, not only in a log. CONFLICT
        when `execution_id` exists (recorded already)."""
        pinned, _ = self._pinned(workspace_id, workflow_id, None, False)
        execution = self._new(
            workspace_id, actor_id, pinned, start_node, dict(inputs), dict(trigger), execution_id,
            variables={},  # nothing runs: the workspace's variables need not be copied
        )  # fmt: skip
        execution.refuse(reason, actor_id)
        self._save_new(execution)
        return execution.id

    def _new(
        self,
        workspace_id: str,
        actor_id: str,
        pinned: Pinned,
        start: str,
        inputs: dict[str, Any],
        trigger: dict[str, Any],
        execution_id: UUID | None,
        variables: dict[str, Any] | None = None,
    ) -> Execution:
        triggers = [n for n in pinned.nodes.values() if n["type"].startswith("trigger.")]
        limits = [
            int(t["config"]["max_concurrency"])
            for t in triggers
            if t["config"].get("max_concurrency")
        ]
        timeout = pinned.nodes[start]["config"].get("timeout_s")
        return Execution(
            execution_id=execution_id or uuid4(),
            workflow_id=pinned.workflow_id,
            workflow_version=pinned.version,
            nodes=pinned.nodes,
            edges=pinned.edges,
            start=start,
            inputs=inputs,
            actor_id=actor_id,
            workspace_id=workspace_id,
            trigger=trigger,
            max_concurrency=min(limits) if limits else None,
            timeout_s=float(timeout) if timeout else None,
            vars=self.variables(workspace_id) if variables is None else variables,
            steps_scope=STEPS_UPSTREAM,
            inline_steps=list(INLINE),
            loop_rule=LOOP_RULE,
        )

    def _save_new(self, execution: Execution) -> None:
        try:
            self.executions.save(execution)
        except IntegrityError:
            raise Conflict(f"execution {execution.id} exists already", current_version=1) from None

    @staticmethod
    def _start_node(pinned: Pinned, kind: str) -> str:
        wanted = {"manual": "trigger.manual", "webhook": "trigger.webhook", "cron": "trigger.cron"}
        matching = sorted(n for n, v in pinned.nodes.items() if v["type"] == wanted.get(kind))
        if not matching:
            matching = sorted(n for n, v in pinned.nodes.items() if v["type"] == "trigger.manual")
        if not matching:
            raise ValidationFailed(
                f"the workflow has no {wanted.get(kind, 'trigger.manual')} trigger to start from",
                field="workflowId",
            )
        return matching[0]

    @staticmethod
    def _check_inputs(trigger: Mapping[str, Any], inputs: dict[str, Any]) -> None:
        problem = inputs_problem(trigger, inputs)
        if problem:
            raise ValidationFailed(problem, field="inputs")

    # -- control -----------------------------------------------------------------------------

    def load(self, workspace_id: str, execution_id: UUID) -> Execution:
        execution = self.executions.get(Execution, execution_id)
        if execution.workspace_id != workspace_id:
            raise NotFound(f"execution {execution_id} does not exist")
        return execution

    def cancel(self, workspace_id: str, actor_id: str, execution_id: UUID, reason: str) -> str:
        """Cancel (the orchestrator tells running steps to stop); returns the status."""
        for _ in range(RACE_RETRIES):
            execution = self.load(workspace_id, execution_id)
            execution.cancel(reason or "cancelled", actor_id)
            try:
                self.executions.save(execution)
                return execution.status
            except IntegrityError:
                continue  # the orchestrator wrote meanwhile: decide again on fresh state
        raise Conflict("the execution kept changing; try again", current_version=0)

    def retry(
        self, workspace_id: str, actor_id: str, execution_id: UUID, from_node: str | None
    ) -> UUID:
        """A new execution of the same pinned graph and inputs that reuses the recorded
        outputs of every step before `from_node` (default: the first failed one)."""
        original = self.load(workspace_id, execution_id)
        if not original.finished:
            raise ValidationFailed("only a finished execution can be retried", field="executionId")
        if original.admitted_at is None and original.status == "FAILED":
            # Refused before any step (a cron fire its version could not run): nothing ran
            # to start again from, and its graph is one the checks refused.
            raise ValidationFailed(
                f"the execution never started ({original.error}); fix the workflow, publish "
                "it and start it again",
                field="executionId",
            )
        plan = original.plan
        handled = {e.source for e in plan.edges if e.label == "error"}
        if from_node is None:
            failed = [n for n, s in original.steps.items() if s.status == "failed"]
            if not failed:
                raise ValidationFailed(
                    "the execution has no failed step; name fromNodeId", field="fromNodeId"
                )
            # The failure that ended it: a step that failed for good, rather than one its
            # error edge took care of or one that would have been retried.
            unhandled = [n for n in failed if n not in handled]
            from_node = next(
                (n for n in unhandled if gave_up(plan, n, original.steps[n])),
                unhandled[0] if unhandled else failed[0],
            )
        if from_node not in plan.nodes or from_node == plan.start:
            raise ValidationFailed(
                f"{from_node!r} is not a step of this execution", field="fromNodeId"
            )
        again = {from_node} | _downstream(plan.edges, from_node)
        outside = {n: s for n, s in original.steps.items() if n not in again and n != plan.start}
        reused: dict[str, dict[str, Any]] = {
            n: {"output": s.output, "branch": s.branch, "blocked": _verdicts(s.blocked)}
            for n, s in outside.items()
            if s.status == "succeeded"
        }
        # A step that failed for good keeps its failure (its error edge's steps are reused
        # behind it): running it again would repeat whatever it did before failing.
        given_up = sorted(
            n for n, s in outside.items() if s.status == "failed" and gave_up(plan, n, s)
        )
        for node_id in given_up:
            if node_id not in handled:
                raise ValidationFailed(
                    f"{node_id!r} failed for good and does not run after {from_node!r}, so "
                    f"the retry would fail on it again: retry from {node_id!r}",
                    field="fromNodeId",
                )
            error = original.steps[node_id].error or {}
            reused[node_id] = {
                "error": {"type": error.get("type"), "message": error.get("message")}
            }
        # Reused steps keep the routes their conditions chose (evaluated again, they could
        # see a different execution: a retry's trigger, steps not run yet).
        reused[plan.start] = {"blocked": _verdicts(original.steps[plan.start].blocked)}
        execution = Execution(
            execution_id=uuid4(),
            workflow_id=original.workflow_id,
            workflow_version=original.workflow_version,
            nodes=original.graph["nodes"],
            edges=original.graph["edges"],
            start=plan.start,
            inputs=original.inputs,
            actor_id=actor_id,
            workspace_id=workspace_id,
            vars=original.vars,
            trigger={"kind": "retry", "execution_id": str(original.id), "from_node": from_node},
            retry_of=str(original.id),
            reused=reused,
            max_concurrency=original.max_concurrency,
            timeout_s=original.timeout_s,
            # As the original ran: the reused outputs were rendered under its rule.
            steps_scope=original.steps_scope,
            # As the original ran: its transforms on runners if it gave them to runners.
            inline_steps=sorted(original.inline_steps),
            loop_rule=original.loop_rule,
            # A loop's item or a subworkflow's run, retried on its own: what its templates
            # saw of the execution that started it.
            outer_steps=original.outer_steps,
            reused_items=_items_done(original, from_node, self._execution_or_none),
        )
        self._save_new(execution)
        return execution.id

    def _execution_or_none(self, execution_id: UUID) -> Execution | None:
        try:
            return self.executions.get(Execution, execution_id)
        except NotFound:
            return None

    def replay(
        self,
        workspace_id: str,
        execution_id: UUID,
        resolve: Callable[[str, Any], Any] | None = None,
    ) -> ReplayReport:
        """Run the orchestration again against the recorded outputs, with no side effects, and
        report where its decisions differ from what was recorded. `resolve` reads recorded
        outputs kept in the artifact store (a read, never a side effect)."""
        original = self.load(workspace_id, execution_id)
        events = list(self.executions.repository.event_store.get(execution_id))
        return replay_events(events, str(execution_id), original.status, resolve)

    # -- variables ---------------------------------------------------------------------------

    def variables(self, workspace_id: str) -> dict[str, Any]:
        """The workspace's variables as stored now (what a start copies into `vars`)."""
        vid = variables_id(workspace_id)
        store = self.executions
        found = self._once_per_batch(
            vid, lambda: _fresh(store.recorder, _VARIABLES, vid, partial(store.get, Variables))
        )
        return dict(found.values) if found is not None else {}

    def set_variable(self, workspace_id: str, actor_id: str, name: str, value: Any) -> None:
        def change(variables: Variables) -> bool:
            return variables.set(name, value, actor_id)

        self._change_variables(workspace_id, actor_id, change)

    def delete_variable(self, workspace_id: str, actor_id: str, name: str) -> None:
        def change(variables: Variables) -> bool:
            variables.delete(name, actor_id)
            return True

        self._change_variables(workspace_id, actor_id, change)

    def _change_variables(
        self, workspace_id: str, actor_id: str, change: Callable[[Variables], bool]
    ) -> None:
        """Apply `change` to the latest variables; another writer in between (a change to
        some other variable of the workspace) means: apply it again on top of theirs."""
        vid = variables_id(workspace_id)
        for _ in range(RACE_RETRIES):
            variables = self.executions.find(Variables, vid) or Variables(
                workspace_id=workspace_id, actor_id=actor_id
            )
            if not change(variables):
                return
            try:
                self.executions.save(variables)
                return
            except IntegrityError:
                continue
        raise Conflict("the workspace's variables kept changing; try again", current_version=0)

    # -- credentials -------------------------------------------------------------------------

    def create_credential(
        self, workspace_id: str, actor_id: str, name: str, kind: str, ciphertext: str
    ) -> UUID:
        if kind not in KINDS:
            raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}", field="kind")
        existing = self.executions.find(Credential, credential_id(workspace_id, name))
        if existing is not None:
            existing.replace(kind, ciphertext, actor_id, must_be_deleted=True)
            self.executions.save(existing)
            return existing.id
        credential = Credential(
            workspace_id=workspace_id,
            name=name,
            kind=kind,
            ciphertext=ciphertext,
            actor_id=actor_id,
        )
        try:
            self.executions.save(credential)
        except IntegrityError:
            raise Conflict(f"credential {name!r} exists already", current_version=1) from None
        return credential.id

    def delete_credential(self, workspace_id: str, actor_id: str, name: str) -> None:
        credential = self.executions.find(Credential, credential_id(workspace_id, name))
        if credential is None or credential.deleted:
            raise NotFound(f"credential {name!r} does not exist")
        credential.delete(actor_id)
        self.executions.save(credential)

    def credentials(self, workspace_id: str, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for name in names:
            cid = credential_id(workspace_id, name)
            credential = self._once_per_batch(cid, partial(self.executions.find, Credential, cid))
            if credential is None or credential.deleted:
                raise StepProblem("CredentialNotFound", f"no credential named {name!r}")
            found[name] = {"kind": credential.kind, "ciphertext": credential.ciphertext}
        return found


def _downstream(edges: Iterable[Edge], node_id: str) -> set[str]:
    edges = list(edges)
    seen: set[str] = set()
    frontier = [node_id]
    while frontier:
        current = frontier.pop()
        for edge in edges:
            if edge.source == current and edge.target not in seen:
                seen.add(edge.target)
                frontier.append(edge.target)
    return seen


#: How far back a retry looks for the execution that ran a loop its retried one took over.
MAX_RETRY_CHAIN = 20


def _items_done(
    original: Execution,
    node_id: str,
    load: Callable[[UUID], Execution | None],
    depth: int = 0,
) -> dict[str, Any]:
    """A retry from a loop step takes over the items that succeeded in its last attempt
    (their side effects happened once): the loop's items and body, and by index (a string)
    what each of those gave. An item the loop stopped waiting for (a sibling failed first)
    counts by its own execution's end (`load` reads an execution). A loop the retried
    execution took over whole from the one it retried ran its items there. Nothing for any
    other step."""
    if original.plan.nodes[node_id]["type"] != "control.loop":
        return {}
    if node_id in original.reused and original.retry_of and depth < MAX_RETRY_CHAIN:
        earlier = load(UUID(str(original.retry_of)))
        return {} if earlier is None else _items_done(earlier, node_id, load, depth + 1)
    done: dict[str, dict[str, Any]] = {}
    for index, record in (original.children.get(node_id) or {}).items():
        if index is None:
            continue
        status, output = record["status"], record["output"]
        if status == "RUNNING":
            ran = load(UUID(str(record["child_id"])))
            if ran is not None and ran.status == "SUCCEEDED":
                status, output = ran.status, ran.output
        if status == "SUCCEEDED":
            done[str(index)] = {"child_id": record["child_id"], "output": output}
    body = original.bodies.get(node_id)
    if not done or body is None:
        return {}
    return {
        node_id: {
            "items": original.loop_items.get(node_id, []),
            "body": {"workflow_id": body.workflow_id, "version": body.version},
            "done": done,
        }
    }


#: Inputs from outside the decision (runner reports, finished children, timers, admission):
#: after the last of a run of them, the orchestrator decided.
RESULTS = ("StepSucceeded", "StepFailed", "StepReused", "ChildFinished", "ExecutionAdmitted")


class _Recorded(Isolated):
    """What a replay's decisions may ask for, answered from the record: no I/O at all."""

    def __init__(
        self,
        bodies: dict[str, Pinned],
        resolve: Callable[[str, Any], Any] | None,
        refused: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        self.bodies = bodies
        self._resolve = resolve
        #: Workflows a loop or subworkflow step was refused (error type, message): the
        #: check ran against the stored workflow then, and its answer is part of the record.
        self.refused = refused or {}

    def resolve(self, workspace_id: str, value: Any) -> Any:
        if self._resolve is None or not (isinstance(value, dict) and "$artifact" in value):
            return value
        try:
            return self._resolve(workspace_id, value)
        except (OSError, ValueError) as exc:
            raise StepProblem("ArtifactMissing", f"a recorded output is gone: {exc}") from exc

    def credentials(self, workspace_id: str, names: list[str]) -> dict[str, dict[str, Any]]:
        return {n: {"kind": "recorded", "ciphertext": ""} for n in names}

    def workflow(self, workspace_id: str, workflow_id: str, version: int | None) -> Pinned:
        for pinned in self.bodies.values():
            if pinned.workflow_id == workflow_id:
                return pinned
        if workflow_id in self.refused:
            raise StepProblem(*self.refused[workflow_id])
        raise StepProblem("WorkflowNotFound", f"workflow {workflow_id} was not recorded")


def _decision(e: Any, env: Isolated) -> tuple[Any, ...]:
    """What of an event a replay must reproduce (not times: those are the clock's). An
    output kept in the artifact store compares by its content (a replay stores nothing)."""
    kind = type(e).__name__

    def j(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    if kind == "StepScheduled":
        return (kind, e.node_id, e.attempt, j(e.input))
    if kind == "StepSucceeded":
        try:  # at any depth: a merge recorded before 2026-12-06 kept references inside
            output = resolved_within(env, e.workspace_id, e.output)
        except StepProblem:
            output = e.output
        return (kind, e.node_id, e.attempt, j(getattr(e, "input", None)), j(output), e.branch)
    if kind == "StepFailed":
        return (kind, e.node_id, e.attempt, e.error_type, e.final)
    if kind == "ExecutionFinished":
        return (kind, e.status, e.error)
    if kind in ("ChildStarted", "ChildFinished"):
        return (kind, e.node_id, e.attempt, e.index)
    if kind == "LoopItems":
        return (kind, e.node_id, j(e.items))
    if kind == "ItemsReused":
        return (kind, e.node_id, e.attempt, j(e.indices))
    if kind == "EdgesRouted":
        return (kind, e.node_id, e.attempt, j(e.blocked), e.error)
    return (kind, getattr(e, "node_id", ""), getattr(e, "attempt", None))


#: Why a loop or subworkflow step can fail on the workflow it would run, before any child.
_REFUSALS = frozenset({"WorkflowNotFound", "WorkflowInvalid", "InputsInvalid"})


def _refused_workflows(events: list[Any]) -> dict[str, tuple[str, str]]:
    """Per workflow id, the refusal recorded for a step that would have run it (its id is
    in the step's rendered input, recorded with its StepScheduled)."""
    inputs: dict[tuple[str, int], Any] = {}
    refused: dict[str, tuple[str, str]] = {}
    for e in events:
        kind = type(e).__name__
        if kind == "StepScheduled":
            inputs[(e.node_id, e.attempt)] = e.input
        elif kind == "StepFailed" and e.error_type in _REFUSALS:
            config = inputs.get((e.node_id, e.attempt))
            if isinstance(config, dict):
                workflow_id = config.get("workflow_id") or config.get("body_workflow_id")
                if workflow_id:
                    refused[str(workflow_id)] = (e.error_type, e.message)
    return refused


def replay_events(
    events: list[Any],
    execution_id: str,
    status: str,
    resolve: Callable[[str, Any], Any] | None = None,
) -> ReplayReport:
    """Decide again after each recorded batch of inputs, against the recorded outputs, and
    compare with what was recorded right after it. Decisions are a pure function of the
    plan and the inputs, so a difference means the run did not follow its rules (or the
    rules changed since it ran)."""
    report = ReplayReport(execution_id, status, 0)
    bodies = {
        e.node_id: Pinned(
            e.body["workflow_id"], e.body["version"], e.body["nodes"], e.body["edges"],
            e.body["start"],
        )
        for e in events
        if type(e).__name__ == "LoopItems"
    }  # fmt: skip
    env = _Recorded(bodies, resolve, _refused_workflows(events))
    state: Any = None
    covered = 0  # events up to this index were reproduced by an earlier decision
    woken: str | None = None  # the step a timer is starting, while its events are read
    for i, e in enumerate(events):
        woken = e.node_id if _woken(state, e, woken) else None
        state = e.mutate(state)
        kind = type(e).__name__
        if kind in ("StepSucceeded", "StepFailed", "StepReused", "ChildFinished"):
            report.replayed_steps += 1
        following = events[i + 1] if i + 1 < len(events) else None
        if i < covered or not (_reported(e) or woken):
            continue
        if following is not None and (_reported(following) or _woken(state, following, woken)):
            continue  # decisions come after the last input of a batch
        shadow = copy.deepcopy(state)
        shadow.new_children = []
        shadow.advance(e.timestamp.timestamp(), "replay", env)
        replayed = [_decision(d, env) for d in shadow.collect_events()]
        recorded = [_decision(d, env) for d in events[i + 1 : i + 1 + len(replayed)]]
        covered = i + 1 + len(replayed)
        after = events[covered] if covered < len(events) else None
        if after is not None and _decided(after) and not _woken(shadow, after, None):
            recorded.append(_decision(after, env))  # recorded a decision the replay did not make
        for want, got in itertools.zip_longest(recorded, replayed):
            if want != got:
                node = next((str(x) for x in (got or want or ())[1:2]), "")
                report.divergences.append(Divergence(node, _say(want), _say(got)))
                break
    return report


def _reported(e: Any) -> bool:
    """An input of decisions: what a runner, a child or the admission reported (not a step the
    orchestrator completed itself as it began it: that is a decision)."""
    kind = type(e).__name__
    return kind in RESULTS and not (kind == "StepSucceeded" and getattr(e, "node_type", None))


def _woken(state: Any, e: Any, woken: str | None) -> bool:
    """Whether `e` is a timer's doing, not a decision's: a step that waited out its backoff
    starting (a loop or subworkflow records it as scheduled again, then its items), read
    against the state before `e`."""
    kind = type(e).__name__
    if kind == "StepScheduled":
        step = state.steps.get(e.node_id) if state is not None else None
        return (
            step is not None
            and e.started
            and step.status == "scheduled"
            and not step.started
            and step.attempt == e.attempt
        )
    return kind in ("LoopItems", "ItemsReused", "ChildStarted") and e.node_id == woken


def _decided(e: Any) -> bool:
    """Events only a decision records (a cancel, a timeout or a timer is not one)."""
    kind = type(e).__name__
    if kind == "StepSucceeded":
        return not _reported(e)
    if kind == "ExecutionFinished":
        return e.status in ("SUCCEEDED", "FAILED")
    return kind in (
        "StepScheduled", "StepSkipped", "ChildStarted", "LoopItems", "ItemsReused", "EdgesRouted"
    )  # fmt: skip


def _say(decision: tuple[Any, ...] | None) -> str:
    if decision is None:
        return "nothing"
    kind, *rest = decision
    return f"{kind} " + " ".join(str(r) for r in rest)


__all__ = ["ExecutionService", "ReplayReport", "replay_events"]
