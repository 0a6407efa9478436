"""Whether a workflow graph can run: every problem at once, each naming its nodes.

Pure: nodes (id → type and config) and edges (source, target[, label]) in, problems out.
Cycles are allowed only through a loop node (its body returns to it); every node must be
reachable from a trigger; configs must be complete for their type; templates may read only the
steps that run before theirs (upstream: see `command_side.execution.decide`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from command_side.execution.aggregate import LOOP_ITEM_NODE
from command_side.execution.decide import Edge, predecessors_of, split_loops, upstream_of
from command_side.workflow.node_types import config_errors
from infra.templates import condition_errors, step_references

LOOP = "control.loop"


@dataclass(frozen=True)
class Problem:
    # MISSING_TRIGGER, CYCLE, UNREACHABLE, INVALID_CONFIG, INVALID_CONDITION, NOT_UPSTREAM
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
    return problems + _unseen_steps(nodes, labelled, conditions or {})


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
        body_nodes = {LOOP_ITEM_NODE: {"type": "trigger.manual"}, **body.nodes}
        body_edges = [*body.edges, *(Edge(LOOP_ITEM_NODE, entry) for entry in body.entries)]
        inside = _visible(body_nodes, body_edges, seen[loop])
        inside.pop(LOOP_ITEM_NODE, None)  # the body's own trigger, not a node of the workflow
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
