"""Whether a workflow graph can run: every problem at once, each naming its nodes.

Pure: nodes (id → type and config) and edges (source, target[, label]) in, problems out.
Cycles are allowed only through a loop node (its body returns to it); every node must be
reachable from a trigger; configs must be complete for their type; an edge's label must be one
its source can take; no edge may cross the boundary of a loop's body but the loop's own, and no
node in a body may take the id of the body's trigger; templates may read only the steps that
run before theirs (upstream: see `command_side.execution.decide`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from command_side.execution.aggregate import LOOP_ITEM_NODE
from command_side.execution.decide import (
    BODY_LABEL,
    ERROR_LABEL,
    Body,
    Edge,
    loop_bodies,
    predecessors_of,
    split_loops,
    upstream_of,
)
from command_side.workflow.node_types import config_errors
from infra.templates import condition_errors, is_template, step_references

LOOP = "control.loop"


@dataclass(frozen=True)
class Problem:
    # MISSING_TRIGGER, CYCLE, UNREACHABLE, INVALID_CONFIG, INVALID_CONDITION, INVALID_LABEL,
    # LOOP_BODY_EDGE, RESERVED_ID, NOT_UPSTREAM
    code: str
    message: str
    node_ids: tuple[str, ...] = ()


def check_graph(
    nodes: Mapping[str, Mapping[str, Any]],
    edges: Iterable[tuple[str, str] | tuple[str, str, str | None]],
    conditions: Mapping[tuple[str, str], str] | None = None,
) -> list[Problem]:
    """`nodes`: id → {"type", "config"}; `edges`: (source id, target id[, label]);
    `conditions`: the condition of each conditional edge."""
    labelled = [Edge(e[0], e[1], e[2] if len(e) > 2 else None) for e in edges]
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for edge in labelled:
        if edge.source in successors and edge.target in nodes:
            successors[edge.source].append(edge.target)
    problems: list[Problem] = []
    triggers = sorted(n for n, node in nodes.items() if str(node["type"]).startswith("trigger."))
    if nodes and not triggers:
        problems.append(Problem("MISSING_TRIGGER", "the workflow has no trigger node"))
    for component in _plain_cycles(nodes, successors):
        problems.append(
            Problem(
                "CYCLE",
                f"nodes {', '.join(component)} form a cycle without a loop node",
                tuple(component),
            )
        )
    if triggers:
        unreachable = sorted(set(nodes) - _reachable(successors, triggers))
        if unreachable:
            problems.append(
                Problem(
                    "UNREACHABLE",
                    f"no trigger leads to {', '.join(unreachable)}",
                    tuple(unreachable),
                )
            )
    for node_id in sorted(nodes):
        node = nodes[node_id]
        for error in config_errors(str(node["type"]), dict(node.get("config") or {})):
            problems.append(
                Problem("INVALID_CONFIG", f"{node_id} ({node['type']}): {error}", (node_id,))
            )
    for (source, target), condition in sorted((conditions or {}).items()):
        for error in condition_errors(condition):
            problems.append(
                Problem("INVALID_CONDITION", f"edge {source} → {target}: {error}", (source, target))
            )
    problems += _label_problems(nodes, labelled)
    problems += _body_edge_problems(nodes, labelled)
    problems += _reserved_ids(nodes, labelled)
    return problems + _unseen_steps(nodes, labelled, conditions or {})


def _label_problems(nodes: Mapping[str, Mapping[str, Any]], edges: list[Edge]) -> list[Problem]:
    """Labels that mean something their source never does: an if or switch edge no branch
    takes, an `error` edge out of a trigger (which never fails), a `body` edge out of a node
    that is not a loop. The first two are dead in every execution, so their targets are
    skipped; the last is followed like an unlabelled edge, which is not what it says."""
    problems = []
    for edge in sorted(edges, key=lambda e: (e.source, e.target, e.label or "")):
        if edge.source not in nodes or edge.target not in nodes:
            continue
        why = _wrong_label(edge.source, nodes[edge.source], edge.label)
        if why:
            problems.append(
                Problem(
                    "INVALID_LABEL",
                    f"edge {edge.source} → {edge.target} ({_shown(edge.label)}): {why}",
                    (edge.source, edge.target),
                )
            )
    return problems


def _wrong_label(source: str, node: Mapping[str, Any], label: str | None) -> str | None:
    kind = str(node["type"])
    config = dict(node.get("config") or {})
    if kind == "control.if" and label not in ("true", "false", ERROR_LABEL):
        return (
            f"never taken: {source} takes the edges labelled true or false (and error "
            "when it fails)"
        )
    cases = config.get("cases")
    if kind == "control.switch" and isinstance(cases, list):
        if any(not isinstance(c, str) or is_template(c) for c in cases):
            return None  # INVALID_CONFIG, or cases known only once rendered
        if label not in (*cases, "default", ERROR_LABEL):
            return (
                f"never taken: {source} takes the edge labelled with the case its value matches "
                f"({', '.join(cases)}), else default (and error when it fails)"
            )
    if kind.startswith("trigger.") and label == ERROR_LABEL:
        return (
            "never taken: an edge labelled error is taken when its source fails, and a "
            "trigger never fails"
        )
    if kind not in ("control.loop", "control.if", "control.switch") and label == BODY_LABEL:
        return f"only a control.loop's edges lead into a body, and {source} is {kind}"
    return None


def _shown(label: str | None) -> str:
    return "no label" if label is None else f"label {label!r}"


def _body_edge_problems(nodes: Mapping[str, Mapping[str, Any]], edges: list[Edge]) -> list[Problem]:
    """Edges across the boundary of a loop's body other than the loop's own into it and those
    back to the loop, and cycles through a loop outside its body. An execution never follows
    such edges: a body runs apart, once per item, from its loop (see `split_loops`). A loop in
    a body is checked within that body, as the body's executions will take it apart."""
    edges = [e for e in edges if e.source in nodes and e.target in nodes]
    predecessors = predecessors_of(nodes, edges)
    successors = predecessors_of(nodes, [Edge(e.target, e.source) for e in edges])
    plain, _, bodies = split_loops(nodes, edges)
    triggers = [n for n, node in plain.items() if str(node["type"]).startswith("trigger.")]
    problems: dict[tuple[str, tuple[str, ...]], Problem] = {}  # one per code and nodes
    loops = [n for n in _reachable(successors, triggers) if plain.get(n, {}).get("type") == LOOP]
    for loop in sorted(loops):
        body = bodies.get(loop, Body({}, [], ()))
        # Reached from the loop and leading back to it, yet not in its body: the workflow
        # reaches them without passing through the loop.
        astray = sorted(
            upstream_of(successors, loop) & upstream_of(predecessors, loop) - set(body.nodes)
        )
        if astray:
            cycle = Problem(
                "CYCLE",
                f"{_listed(astray)} on a cycle through loop {loop} but outside its body: the "
                f"workflow reaches {'them' if len(astray) > 1 else 'it'} without passing "
                f"through {loop}",
                tuple(sorted((loop, *astray))),
            )
            problems.setdefault((cycle.code, cycle.node_ids), cycle)
        for problem in _crossings(loop, body, edges):
            problems.setdefault((problem.code, problem.node_ids), problem)
        trigger = _trigger_id(body.nodes)
        for problem in _body_edge_problems(
            {trigger: {"type": "trigger.manual"}, **body.nodes},
            [*body.edges, *(Edge(trigger, entry) for entry in body.entries)],
        ):
            problems.setdefault((problem.code, problem.node_ids), problem)
    return list(problems.values())


def _listed(node_ids: list[str]) -> str:
    if len(node_ids) == 1:
        return f"node {node_ids[0]} is"
    return f"nodes {', '.join(node_ids)} are"


def _crossings(loop: str, body: Body, edges: list[Edge]) -> list[Problem]:
    inside = body.nodes.keys()
    # Body nodes with a path back to the loop: an unlabelled edge of the loop to one of them
    # begins an iteration.
    returning = upstream_of(predecessors_of({loop: {}, **body.nodes}, edges), loop)
    problems = []
    for e in sorted(edges, key=lambda e: (e.source, e.target, e.label or "")):
        arrow = f"edge {e.source} → {e.target}"
        if e.source in inside and e.target not in inside and e.target != loop:
            message = (
                f"{arrow} leaves the body of loop {loop}: a body runs on its own for each item, "
                f"and only its edges back to {loop} lead out of it"
            )
        elif e.source in inside and e.target == loop and e.label == ERROR_LABEL:
            message = (
                f"{arrow} is labelled error, but a body's edges back to its loop only close "
                f"it: a failure of {e.source} fails the item"
            )
        elif e.source not in inside and e.source != loop and e.target in inside:
            message = (
                f"{arrow} enters the body of loop {loop} from outside: a body runs only "
                f"from {loop}, once per item"
            )
        elif e.source == loop and e.label == BODY_LABEL and e.target not in inside:
            message = (
                f"{arrow} is labelled body, but {e.target} cannot be in the body of {loop}: "
                f"the workflow reaches it without passing through {loop}"
            )
        elif e.source == loop and e.target in inside and e.label == ERROR_LABEL:
            message = (
                f"{arrow} is labelled error, but {e.target} is in the body of {loop}: it would "
                f"run for each item, not when {loop} fails"
            )
        elif e.source == loop and e.target in inside and e.label != BODY_LABEL:
            if e.target in returning:
                continue
            message = (
                f"{arrow} leads into the body of {loop} (its body reaches {e.target}), but is "
                f"neither labelled body nor on a path back to {loop}: label it body to run "
                f"{e.target} for each item, or keep the body from reaching {e.target} to run "
                f"it after the loop"
            )
        else:
            continue
        problems.append(Problem("LOOP_BODY_EDGE", message, (e.source, e.target)))
    return problems


def _reserved_ids(nodes: Mapping[str, Mapping[str, Any]], edges: list[Edge]) -> list[Problem]:
    """A body runs from a trigger named `item` (its inputs: the item and its index), which a
    node of the body by that name would take the place of."""
    around = {
        loop: body for loop, body in loop_bodies(nodes, edges).items() if LOOP_ITEM_NODE in body
    }
    if not around:
        return []
    loop = min(around, key=lambda n: (len(around[n]), n))  # the innermost
    return [
        Problem(
            "RESERVED_ID",
            f"node {LOOP_ITEM_NODE} is in the body of loop {loop}, whose executions start from "
            f"a trigger named {LOOP_ITEM_NODE} (inputs.item, inputs.index): the node would "
            f"never run; rename it",
            (LOOP_ITEM_NODE,),
        )
    ]


def _trigger_id(body_nodes: Mapping[str, Any]) -> str:
    """The id of a body's trigger here: `item`, as in its executions, unless a node of the
    body took it (RESERVED_ID): then one no node can have, so the rest is still checked."""
    trigger = LOOP_ITEM_NODE
    while trigger in body_nodes:
        trigger += " "
    return trigger


def _unseen_steps(
    nodes: Mapping[str, Mapping[str, Any]],
    edges: list[Edge],
    conditions: Mapping[tuple[str, str], str],
) -> list[Problem]:
    """Templates reading a step that does not run before theirs: on a parallel branch, further
    down, or not in the workflow. At run time such a step is never in `steps` (it would be
    there or not depending on which branch finished first)."""
    seen = _visible(nodes, edges, frozenset())
    problems = []
    for node_id in sorted(nodes):
        config = dict(nodes[node_id].get("config") or {})
        # Keys never rendered: notes, the retry policy. (Per-item templates, such as a
        # filter's condition, see the same steps as the rest of their node's config.)
        for key in ("notes", "retry"):
            config.pop(key, None)
        for path, step in step_references(config):
            if step not in seen.get(node_id, ()):
                problems.append(
                    Problem(
                        "NOT_UPSTREAM",
                        f"{node_id}.{path} reads steps.{step}, {_why(nodes, step, node_id)}",
                        (node_id, step) if step in nodes else (node_id,),
                    )
                )
    for (source, target), condition in sorted(conditions.items()):
        for _, step in step_references({"condition": condition}):
            if step != source and step not in seen.get(source, ()):
                problems.append(
                    Problem(
                        "NOT_UPSTREAM",
                        f"the condition of edge {source} → {target} reads steps.{step}, "
                        f"{_why(nodes, step, source)}",
                        (source, target),
                    )
                )
    return problems


def _why(nodes: Mapping[str, Any], step: str, reader: str) -> str:
    if step not in nodes:
        return "which is not a node of this workflow"
    return f"which is not upstream of {reader} (no path of edges leads from {step} to it)"


def _visible(
    nodes: Mapping[str, Mapping[str, Any]], edges: list[Edge], outer: frozenset[str]
) -> dict[str, frozenset[str]]:
    """Per node, the steps its templates can read, as an execution will run it: a loop's
    body runs apart, once per item, after a trigger of its own, and sees what the loop sees."""
    plain, plain_edges, bodies = split_loops(nodes, edges)
    predecessors = predecessors_of(plain, plain_edges)
    seen = {n: frozenset(upstream_of(predecessors, n)) | outer for n in plain}
    for loop, body in bodies.items():
        trigger = _trigger_id(body.nodes)
        body_nodes = {trigger: {"type": "trigger.manual"}, **body.nodes}
        body_edges = [*body.edges, *(Edge(trigger, entry) for entry in body.entries)]
        inside = _visible(body_nodes, body_edges, seen[loop])
        inside.pop(trigger)  # the body's own trigger, not a node of the workflow
        seen.update(inside)
    return seen


def _plain_cycles(
    nodes: Mapping[str, Mapping[str, Any]], successors: Mapping[str, list[str]]
) -> list[list[str]]:
    """Cycles that do not pass through a loop node: the cyclic parts of the graph once
    every loop node is taken out (a cycle through a loop node disappears with it)."""
    without_loops = {
        n: [t for t in targets if nodes[t]["type"] != LOOP]
        for n, targets in successors.items()
        if nodes[n]["type"] != LOOP
    }
    return _cycles(without_loops)


def _reachable(successors: Mapping[str, list[str]], starts: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(successors[node])
    return seen


def _cycles(successors: Mapping[str, list[str]]) -> list[list[str]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(successors):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(successors[node]):
                work.append((node, i + 1))
                nxt = successors[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in successors[node]:
                    found.append(sorted(component))
    return sorted(found)
