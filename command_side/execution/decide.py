"""The orchestrator's decision: given a pinned workflow graph and what its steps did so far,
what happens next. Pure: no I/O, no clock of its own (`now` is given).

Edges carry control flow. An edge is *live* when its source succeeded and the edge's label
is the branch the source took (if/switch choose one; other nodes take the unlabelled and
`true`-less edges), or when its source failed for good and the edge is labelled `error`.
It is *dead* when its source was skipped, or took another branch. A node runs once every
incoming edge is decided and one is live (a `control.merge` in mode `any` runs on the first
live one); when every incoming edge is dead it is skipped, and so on downstream.

A node's templates see the outputs of the nodes *upstream* of it (those with a path to it):
they have all finished when it runs, so what it reads does not depend on which parallel
branch happened to finish first. (After a `control.merge` in mode `any`, the branches that
had not finished yet are absent: that merge waits for whichever comes first.)
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

ERROR_LABEL = "error"
BODY_LABEL = "body"
LOOP = "control.loop"
TERMINAL = frozenset({"succeeded", "failed", "skipped"})
#: Attempts a node type gets unless its config's `retry` says otherwise.
DEFAULT_ATTEMPTS = {"http.request": 3, "sql.query": 2, "ai.llm": 3, "ai.extract": 3}
#: Attempts that do not count against the retry budget (a runner killed or shut down under a
#: step) are still bounded: a task that kills every runner it reaches is a poison task.
MAX_FREE_REDELIVERIES = 3


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str | None = None
    #: A template: the edge is taken only when it renders truthy once its source succeeded.
    condition: str | None = None


@dataclass(frozen=True)
class Plan:
    """The graph an execution runs: pinned when it starts, never changed after."""

    nodes: Mapping[str, Mapping[str, Any]]  # id → {"type", "config"}
    edges: Sequence[Edge]
    start: str  # the trigger that started it
    #: Loop id → its body, which runs as a child execution per item (not in this plan).
    bodies: Mapping[str, Body] = field(default_factory=dict)

    def incoming(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.target == node_id]

    def outgoing(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.source == node_id]

    def upstream(self, node_id: str) -> frozenset[str]:
        """The nodes with a path to `node_id` (itself not included)."""
        found = self._upstream.get(node_id)
        if found is None:
            found = self._upstream[node_id] = frozenset(upstream_of(self._predecessors, node_id))
        return found

    @cached_property
    def _predecessors(self) -> dict[str, list[str]]:
        return predecessors_of(self.nodes, self.edges)

    @cached_property
    def _upstream(self) -> dict[str, frozenset[str]]:
        return {}


def predecessors_of(nodes: Mapping[str, Any], edges: Sequence[Edge]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        if e.source in nodes and e.target in nodes:
            found[e.target].append(e.source)
    return found


def upstream_of(predecessors: Mapping[str, list[str]], node_id: str) -> set[str]:
    """The nodes with a path to `node_id` in the graph `predecessors` describes."""
    return _reach(predecessors, predecessors.get(node_id, []), stop=node_id)


@dataclass(frozen=True)
class Body:
    """A loop's body: the nodes between the loop and the edges that return to it."""

    nodes: Mapping[str, Mapping[str, Any]]
    edges: Sequence[Edge]
    entries: tuple[str, ...]  # where each iteration begins


@dataclass
class Step:
    """What one node did so far."""

    status: str = "pending"  # pending, scheduled, succeeded, failed, skipped
    attempt: int = 0
    output: Any = None
    error: dict[str, Any] | None = None  # {"type", "message", "retryable", "charged"}
    branch: str | None = None  # for if/switch: the label it chose
    #: Attempts that counted against the retry budget; None: every attempt did.
    charged: int | None = None
    input: Any = None  # the rendered config it ran with
    not_before: float = 0.0
    started: bool = False  # its task left (or the orchestrator began it)
    task: dict[str, Any] | None = None
    dispatched_at: float = 0.0
    #: Targets of conditional edges whose condition was false (None: not evaluated yet).
    blocked: tuple[str, ...] | None = None
    #: Why its edges' conditions could not be evaluated: the execution fails with it.
    routing_error: str | None = None

    @property
    def used(self) -> int:
        return self.attempt if self.charged is None else self.charged


@dataclass(frozen=True)
class Schedule:
    node_id: str
    attempt: int
    not_before: float  # retries wait their backoff


@dataclass(frozen=True)
class Skip:
    node_id: str


@dataclass(frozen=True)
class Finish:
    status: str  # SUCCEEDED or FAILED
    error: str | None = None
    node_id: str | None = field(default=None, compare=False)  # the node that decided it


Action = Schedule | Skip | Finish


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    initial_interval_s: float = 1.0
    backoff: float = 2.0
    max_interval_s: float = 60.0
    non_retryable: tuple[str, ...] = field(default_factory=tuple)

    def delay(self, attempt: int) -> float:
        """Wait before attempt `attempt + 1`, after `attempt` failed."""
        try:
            grown = self.initial_interval_s * self.backoff ** (attempt - 1)
        except OverflowError:
            return self.max_interval_s
        return min(grown, self.max_interval_s)


def retry_policy(node: Mapping[str, Any]) -> RetryPolicy:
    given = dict((node.get("config") or {}).get("retry") or {})
    return RetryPolicy(
        max_attempts=int(given.get("max_attempts", DEFAULT_ATTEMPTS.get(node["type"], 1))),
        initial_interval_s=float(given.get("initial_interval_s", 1.0)),
        backoff=float(given.get("backoff", 2.0)),
        max_interval_s=float(given.get("max_interval_s", 60.0)),
        non_retryable=tuple(given.get("non_retryable", ())),
    )


def decide(plan: Plan, steps: Mapping[str, Step], now: float) -> list[Action]:
    """Everything that should happen now; empty while steps are running."""
    actions: list[Action] = []
    for node_id, step in steps.items():
        if node_id not in plan.nodes:
            continue
        if step.status == "failed" and not _gave_up(plan, node_id, step):
            charged = (step.error or {}).get("charged", True)
            delay = retry_policy(plan.nodes[node_id]).delay(step.used) if charged else 0.0
            actions.append(Schedule(node_id, step.attempt + 1, now + delay))
            continue
        if step.status == "failed" and not _handled(plan, node_id):
            message = (step.error or {}).get("message", "failed")
            return [Finish("FAILED", f"{node_id}: {message}", node_id)]
        if step.routing_error is not None:
            return [Finish("FAILED", f"{node_id}: {step.routing_error}", node_id)]
        stop = plan.nodes[node_id]["type"] == "control.stop"
        if stop and step.status == "succeeded":
            config = plan.nodes[node_id].get("config") or {}
            said = step.output if isinstance(step.output, dict) else {}
            if config.get("outcome") == "fail":
                message = said.get("message") or config.get("message") or "stopped"
                return [Finish("FAILED", f"{node_id}: {message}", node_id)]
            return [Finish("SUCCEEDED", None, node_id)]
    for node_id in plan.nodes:
        current = steps.get(node_id)
        if current is not None and current.status != "pending":
            continue
        verdict = _readiness(plan, steps, node_id)
        if verdict == "run":
            actions.append(Schedule(node_id, 1, now))
        elif verdict == "skip":
            actions.append(Skip(node_id))
    if not actions and all(
        steps.get(n) is not None and steps[n].status in TERMINAL for n in plan.nodes
    ):
        actions.append(Finish("SUCCEEDED"))
    return actions


def _gave_up(plan: Plan, node_id: str, step: Step) -> bool:
    """A failure that will not be retried: attempts used up, or an error not worth another."""
    policy = retry_policy(plan.nodes[node_id])
    error = step.error or {}
    if error.get("retryable") is False or error.get("type", "") in policy.non_retryable:
        return True
    return step.used >= policy.max_attempts or step.attempt - step.used > MAX_FREE_REDELIVERIES


def gave_up(plan: Plan, node_id: str, step: Step) -> bool:
    """Whether a failed step is failed for good."""
    return _gave_up(plan, node_id, step)


#: How a graph's loop bodies are found: `loop_bodies` for executions started since 2026-12-06
#: (2); executions recorded before (1) are split as they were then (`_split_loops_v1`), so
#: they run on and replay as recorded.
LOOP_RULE = 2


def split_loops(
    nodes: Mapping[str, Mapping[str, Any]], edges: Sequence[Edge], rule: int = LOOP_RULE
) -> tuple[dict[str, Mapping[str, Any]], list[Edge], dict[str, Body]]:
    """Take the body of each loop that is in no other loop's body out of the graph (see
    `loop_bodies`). A loop inside a body is taken apart in turn by the executions of that body."""
    if rule < 2:
        return _split_loops_v1(nodes, edges)
    within = loop_bodies(nodes, edges)
    nested = set().union(*within.values())
    bodies: dict[str, Body] = {}
    for loop, body in within.items():
        if loop in nested or not body:
            continue
        entries = tuple(
            dict.fromkeys(e.target for e in edges if e.source == loop and e.target in body)
        )
        inner = [e for e in edges if e.source in body and e.target in body]
        bodies[loop] = Body({n: spec for n, spec in nodes.items() if n in body}, inner, entries)
    taken = set().union(*(body.nodes for body in bodies.values()))
    outer_nodes = {n: spec for n, spec in nodes.items() if n not in taken}
    outer_edges = [e for e in edges if e.source in outer_nodes and e.target in outer_nodes]
    return outer_nodes, outer_edges, bodies


def _split_loops_v1(
    nodes: Mapping[str, Mapping[str, Any]], edges: Sequence[Edge]
) -> tuple[dict[str, Mapping[str, Any]], list[Edge], dict[str, Body]]:
    """The split of executions started before 2026-12-06: each loop's body, in the order the
    nodes were added (a loop already in a body is skipped), is the nodes on a cycle back to
    it and those reached through its edges labelled `body`."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    predecessors: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        if e.source in nodes and e.target in nodes:
            successors[e.source].append(e.target)
            predecessors[e.target].append(e.source)
    bodies: dict[str, Body] = {}
    taken: set[str] = set()
    for loop in (n for n, spec in nodes.items() if spec.get("type") == LOOP):
        if loop in taken:
            continue
        forward = _reach(successors, successors[loop], stop=loop)
        back = _reach(predecessors, predecessors[loop], stop=loop)
        labelled = [e.target for e in edges if e.source == loop and e.label == BODY_LABEL]
        body = (forward & back) | _reach(successors, labelled, stop=loop) | set(labelled)
        body.discard(loop)
        if not body:
            continue
        entries = tuple(
            dict.fromkeys(e.target for e in edges if e.source == loop and e.target in body)
        )
        inner = [e for e in edges if e.source in body and e.target in body]
        bodies[loop] = Body({n: nodes[n] for n in body}, inner, entries)
        taken |= body
    outer_nodes = {n: spec for n, spec in nodes.items() if n not in taken}
    outer_edges = [e for e in edges if e.source in outer_nodes and e.target in outer_nodes]
    return outer_nodes, outer_edges, bodies


def loop_bodies(
    nodes: Mapping[str, Mapping[str, Any]], edges: Sequence[Edge]
) -> dict[str, frozenset[str]]:
    """Each loop's body, the bodies of the loops in it included: the nodes its edges labelled
    `body` lead to and those on a path back to it, among the nodes only it leads to (every
    path from a trigger to them passes through it). So a loop in a body is in its enclosing
    loop's body, never the other way round, whatever order the nodes were added in."""
    # The successors of a node are its predecessors once every edge is turned round.
    successors = predecessors_of(nodes, [Edge(e.target, e.source) for e in edges])
    predecessors = predecessors_of(nodes, edges)
    triggers = [n for n, spec in nodes.items() if str(spec.get("type")).startswith("trigger.")]
    reached = _reach(successors, triggers)
    found: dict[str, frozenset[str]] = {}
    for loop in (n for n, spec in nodes.items() if spec.get("type") == LOOP):
        only_through = reached - _reach(successors, triggers, stop=loop) - {loop}
        labelled = [e.target for e in edges if e.source == loop and e.label == BODY_LABEL]
        ahead = _reach(successors, labelled, stop=loop, within=only_through)
        back = _reach(predecessors, predecessors[loop], stop=loop, within=only_through)
        found[loop] = frozenset(ahead | back)
    # A body takes in the bodies of the loops in it. Those are loops only its own loop leads
    # to, never that loop itself, so the bodies stop growing.
    grown = True
    while grown:
        grown = False
        for loop, body in found.items():
            whole = body.union(*(found[n] for n in body if n in found))
            grown = grown or whole != body
            found[loop] = whole
    return found


def _reach(
    successors: Mapping[str, list[str]],
    starts: Sequence[str],
    stop: str | None = None,
    within: Container[str] | None = None,
) -> set[str]:
    """What `starts` lead to, themselves included, short of `stop` and, given `within`, of
    every node outside it."""
    seen = {s for s in starts if s != stop and (within is None or s in within)}
    frontier = list(seen)
    while frontier:
        for nxt in successors.get(frontier.pop(), ()):
            if nxt != stop and nxt not in seen and (within is None or nxt in within):
                seen.add(nxt)
                frontier.append(nxt)
    return seen


def _downstream(plan: Plan, node_id: str) -> set[str]:
    seen: set[str] = set()
    frontier = [node_id]
    while frontier:
        for edge in plan.outgoing(frontier.pop()):
            if edge.target not in seen:
                seen.add(edge.target)
                frontier.append(edge.target)
    return seen


def _handled(plan: Plan, node_id: str) -> bool:
    return any(e.label == ERROR_LABEL for e in plan.outgoing(node_id))


def _edge_state(plan: Plan, steps: Mapping[str, Step], edge: Edge) -> str:
    """live, dead or open (not decided yet)."""
    source = steps.get(edge.source)
    if source is None or source.status not in TERMINAL:
        return "open"
    if source.status == "failed" and not _gave_up(plan, edge.source, source):
        return "open"
    if source.status == "skipped":
        return "dead"
    if source.status == "failed":
        return "live" if edge.label == ERROR_LABEL else "dead"
    if edge.label == ERROR_LABEL:
        return "dead"
    if edge.condition is not None:
        if source.blocked is None:
            return "open"  # its conditions are evaluated before the next decision
        if edge.target in source.blocked:
            return "dead"
    kind = plan.nodes[edge.source]["type"]
    if kind in ("control.if", "control.switch"):
        return "live" if edge.label == source.branch else "dead"
    return "live"


def unrouted(plan: Plan, steps: Mapping[str, Step]) -> list[str]:
    """Succeeded steps with conditional edges not evaluated yet."""
    return [
        node_id
        for node_id, step in steps.items()
        if step.status == "succeeded"
        and step.blocked is None
        and node_id in plan.nodes
        and any(e.condition is not None for e in plan.outgoing(node_id))
    ]


def _readiness(plan: Plan, steps: Mapping[str, Step], node_id: str) -> str:
    """run, skip or wait."""
    if node_id == plan.start:
        return "wait"  # started with the execution
    incoming = plan.incoming(node_id)
    if plan.nodes[node_id]["type"] == LOOP:
        # A loop's body returns to it: those edges close the loop, they do not gate it.
        body = _downstream(plan, node_id)
        incoming = [e for e in incoming if e.source not in body]
    if not incoming:
        return "skip"  # another trigger: not the one that started this execution
    states = [_edge_state(plan, steps, e) for e in incoming]
    node = plan.nodes[node_id]
    wants_any = node["type"] == "control.merge" and (node.get("config") or {}).get("mode") == "any"
    if wants_any and "live" in states:
        return "run"
    if "open" in states:
        return "wait"
    return "run" if "live" in states else "skip"
