"""Whether a workflow graph can run: every problem at once, each naming its nodes.

Pure: nodes (id → type and config) and edges (source, target) in, problems out. Cycles are
allowed only through a loop node (its body returns to it); every node must be reachable from a
trigger; configs must be complete for their type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from command_side.workflow.node_types import config_errors
from infra.templates import condition_errors

LOOP = "control.loop"


@dataclass(frozen=True)
class Problem:
    code: str  # MISSING_TRIGGER, CYCLE, UNREACHABLE, INVALID_CONFIG, INVALID_CONDITION
    message: str
    node_ids: tuple[str, ...] = ()


def check_graph(
    nodes: Mapping[str, Mapping[str, Any]],
    edges: Iterable[tuple[str, str]],
    conditions: Mapping[tuple[str, str], str] | None = None,
) -> list[Problem]:
    """`nodes`: id → {"type", "config"}; `edges`: (source id, target id); `conditions`: the
    condition of each conditional edge."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in edges:
        if source in successors and target in nodes:
            successors[source].append(target)
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
    return problems


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
