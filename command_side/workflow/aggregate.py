"""The Workflow aggregate: a graph of nodes and edges edited by operation-level events.

Public methods check invariants and raise typed errors; the private `@event` methods only
change state, so folding stored events never re-runs validation.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, event

from command_side.errors import Forbidden, Locked, NotFound, ValidationFailed
from command_side.validation import MAX_NAME, check_name, check_text, json_size
from command_side.workflow.commands import CommandResult, Meta
from command_side.workflow.node_types import check_config
from infra.templates import condition_errors

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_DESCRIPTION = 10_000
MAX_LABEL = 64
MAX_CONDITION = 2_000
#: Node configs travel in every event and read: large data belongs in the artifact store.
MAX_CONFIG_BYTES = 64 * 1024
#: Idempotency keys remembered per workflow; older ones fall out first.
MAX_REMEMBERED_OPS = 10_000
#: A comment's Markdown (stored as text, never rendered here) and how many it may mention.
MAX_COMMENT = 10_000
MAX_MENTIONS = 50
#: A node lock's lease when the locker names none, and the longest one may ask for.
LOCK_TTL_S = 30.0
MAX_LOCK_TTL_S = 3600.0


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid4().hex[:12]}"


def _optional_text(value: str | None, limit: int, field: str) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise ValidationFailed(f"{field} is longer than {limit} characters", field=field)
    return check_text(value, field)


def _config(config: object) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ValidationFailed("config must be a JSON object", field="config")
    size = json_size(config, "config")
    if size > MAX_CONFIG_BYTES:
        raise ValidationFailed(
            f"config is {size} bytes; the limit is {MAX_CONFIG_BYTES}", field="config"
        )
    return config


def _coordinate(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise ValidationFailed(f"{field} must be a finite number", field=field)
    return float(value)


class Workflow(Aggregate):
    """A workflow graph. Version = number of events; published versions are numbered 1, 2, …"""

    @staticmethod
    def create_id(workflow_id: UUID, **_: Any) -> UUID:
        return workflow_id

    @classmethod
    def create(cls, workflow_id: UUID, name: str, description: str, meta: Meta) -> Workflow:
        return cls(
            workflow_id=workflow_id,
            name=check_name(name),
            description=_optional_text(description, MAX_DESCRIPTION, "description") or "",
            actor_id=meta.actor_id,
            workspace_id=meta.workspace_id,
            client_op_id=meta.client_op_id,
        )

    @event("Created")
    def __init__(
        self,
        workflow_id: UUID,
        name: str,
        description: str,
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.description = description
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[str, dict[str, Any]] = {}
        self.published: list[dict[str, Any]] = []
        self.locks: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, dict[str, Any]] = {}
        self.op_results: dict[str, tuple[int, str | None]] = {}
        self._remember(client_op_id, None, version=1)

    # -- idempotency -------------------------------------------------------------------------

    def _remember(
        self, client_op_id: str | None, created_id: str | None, version: int | None = None
    ) -> None:
        # Runs inside event bodies, before eventsourcing advances `version`.
        if client_op_id is None:
            return
        version = self.version + 1 if version is None else version
        self.op_results[client_op_id] = (version, created_id)
        if len(self.op_results) > MAX_REMEMBERED_OPS:
            del self.op_results[next(iter(self.op_results))]

    def result_of(self, client_op_id: str | None) -> CommandResult | None:
        """The first result of an operation already applied with this idempotency key."""
        if client_op_id is None or client_op_id not in self.op_results:
            return None
        version, created_id = self.op_results[client_op_id]
        return CommandResult(self.id, version, created_id)

    # -- lookups -----------------------------------------------------------------------------

    def node(self, node_id: str) -> dict[str, Any]:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise NotFound(f"node {node_id!r} does not exist", node_id=node_id) from None

    def edge(self, edge_id: str) -> dict[str, Any]:
        try:
            return self.edges[edge_id]
        except KeyError:
            raise NotFound(f"edge {edge_id!r} does not exist", edge_id=edge_id) from None

    # -- operations --------------------------------------------------------------------------

    def rename(self, name: str, meta: Meta) -> None:
        self._renamed(check_name(name), meta.actor_id, self.workspace_id, meta.client_op_id)

    @event("Renamed")
    def _renamed(
        self, name: str, actor_id: str, workspace_id: str, client_op_id: str | None
    ) -> None:
        self.name = name
        self._remember(client_op_id, None)

    def change_description(self, description: str, meta: Meta) -> None:
        text = _optional_text(description, MAX_DESCRIPTION, "description") or ""
        self._description_changed(text, meta.actor_id, self.workspace_id, meta.client_op_id)

    @event("DescriptionChanged")
    def _description_changed(
        self, description: str, actor_id: str, workspace_id: str, client_op_id: str | None
    ) -> None:
        self.description = description
        self._remember(client_op_id, None)

    def add_node(
        self,
        node_type: str,
        name: str,
        config: dict[str, Any],
        x: float,
        y: float,
        meta: Meta,
        node_id: str | None = None,
    ) -> str:
        node_id = node_id or new_id("n")
        if not ID_PATTERN.fullmatch(node_id):
            raise ValidationFailed("node id must be 1-64 letters, digits or _.:-", field="nodeId")
        if node_id in self.nodes:
            raise ValidationFailed(f"node {node_id!r} already exists", field="nodeId")
        if not ID_PATTERN.fullmatch(node_type):
            raise ValidationFailed("node type must look like 'http.request'", field="type")
        config = _config(config)
        check_config(node_type, config)
        self._node_added(
            node_id,
            node_type,
            name.strip()[:MAX_NAME] if name else node_type,
            config,
            _coordinate(x, "x"),
            _coordinate(y, "y"),
            meta.actor_id,
            self.workspace_id,
            meta.client_op_id,
        )
        return node_id

    @event("NodeAdded")
    def _node_added(
        self,
        node_id: str,
        node_type: str,
        name: str,
        config: dict[str, Any],
        x: float,
        y: float,
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        self.nodes[node_id] = {"type": node_type, "name": name, "config": config, "x": x, "y": y}
        self._remember(client_op_id, node_id)

    # -- node locks ----------------------------------------------------------------------------
    #
    # A lock is a lease: `expires_at` (epoch seconds) is recorded in the event, so folding the
    # events never asks the clock. A lease past its time is no lock any more, even before the
    # scheduler has recorded `LockExpired` for it.

    def _locks(self) -> dict[str, dict[str, Any]]:
        # Workflows folded from snapshots taken before locks existed have none yet.
        return self.__dict__.setdefault("locks", {})  # type: ignore[no-any-return]

    def lock_of(self, node_id: str, now: float) -> dict[str, Any] | None:
        """The node's lock while its lease runs: {holder, expires_at, ttl_s}."""
        lock = self._locks().get(node_id)
        return lock if lock is not None and lock["expires_at"] > now else None

    def _guard(self, node_id: str, meta: Meta, now: float) -> None:
        """Edits of a node someone else holds fail with LOCKED; the holder's renew the lease
        once half of it has run."""
        lock = self.lock_of(node_id, now)
        if lock is None:
            return
        if lock["holder"] != meta.actor_id:
            raise Locked(
                f"node {node_id!r} is locked by {lock['holder']} until {lock['expires_at']:.0f}",
                holder=lock["holder"],
                expires_at=lock["expires_at"],
                node_id=node_id,
            )
        if lock["expires_at"] - now < lock["ttl_s"] / 2:
            self._lock_renewed(node_id, now + lock["ttl_s"], meta.actor_id, self.workspace_id)

    def lock_node(self, node_id: str, ttl_s: float | None, meta: Meta, now: float) -> float:
        """Take (or, for its holder, extend) the node's lock; returns when it expires."""
        self.node(node_id)
        ttl = LOCK_TTL_S if ttl_s is None else float(ttl_s)
        if not (math.isfinite(ttl) and 1 <= ttl <= MAX_LOCK_TTL_S):
            raise ValidationFailed(f"ttl must be 1 to {MAX_LOCK_TTL_S:.0f} seconds", field="ttl")
        lock = self.lock_of(node_id, now)
        if lock is not None and lock["holder"] != meta.actor_id:
            self._guard(node_id, meta, now)  # raises LOCKED
        self._node_locked(
            node_id, meta.actor_id, now + ttl, ttl, meta.actor_id, self.workspace_id,
            meta.client_op_id,
        )  # fmt: skip
        return now + ttl

    def renew_lock(self, node_id: str, meta: Meta, now: float) -> float:
        """The holder extends its lease by its length; returns when it now expires."""
        self.node(node_id)
        lock = self.lock_of(node_id, now)
        if lock is None or lock["holder"] != meta.actor_id:
            self._guard(node_id, meta, now)
            raise ValidationFailed(f"you hold no lock on node {node_id!r}", field="nodeId")
        expires_at = now + float(lock["ttl_s"])
        self._lock_renewed(node_id, expires_at, meta.actor_id, self.workspace_id)
        return expires_at

    def unlock_node(self, node_id: str, meta: Meta, now: float) -> None:
        """The holder lets go of its lock."""
        self.node(node_id)
        lock = self.lock_of(node_id, now)
        if lock is None or lock["holder"] != meta.actor_id:
            self._guard(node_id, meta, now)
            raise ValidationFailed(f"you hold no lock on node {node_id!r}", field="nodeId")
        self._node_unlocked(node_id, meta.actor_id, self.workspace_id, meta.client_op_id)

    def break_lock(self, node_id: str, meta: Meta, now: float) -> str:
        """An admin takes the lock away from its holder; returns who held it."""
        self.node(node_id)
        lock = self.lock_of(node_id, now)
        if lock is None:
            raise ValidationFailed(f"node {node_id!r} is not locked", field="nodeId")
        self._lock_broken(node_id, lock["holder"], meta.actor_id, self.workspace_id)
        return str(lock["holder"])

    def expire_lock(self, node_id: str, expires_at: float, now: float) -> bool:
        """Record that the lease ending at `expires_at` ran out (False, and nothing recorded,
        when the node was renewed, released or re-locked since, or the time has not come)."""
        lock = self._locks().get(node_id)
        if lock is None or lock["expires_at"] != expires_at or expires_at > now:
            return False
        self._lock_expired(node_id, lock["holder"], expires_at, "scheduler", self.workspace_id)
        return True

    @event("NodeLocked")
    def _node_locked(
        self,
        node_id: str,
        holder: str,
        expires_at: float,
        ttl_s: float,
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        self._locks()[node_id] = {
            "holder": holder,
            "expires_at": expires_at,
            "ttl_s": ttl_s,
        }
        # A repeated lockNode answers the lease it got the first time.
        self._remember(client_op_id, repr(expires_at))

    @event("LockRenewed")
    def _lock_renewed(
        self, node_id: str, expires_at: float, actor_id: str, workspace_id: str
    ) -> None:
        self._locks()[node_id]["expires_at"] = expires_at

    @event("NodeUnlocked")
    def _node_unlocked(
        self, node_id: str, actor_id: str, workspace_id: str, client_op_id: str | None
    ) -> None:
        self._locks().pop(node_id, None)
        self._remember(client_op_id, None)

    @event("LockBroken")
    def _lock_broken(self, node_id: str, holder: str, actor_id: str, workspace_id: str) -> None:
        self._locks().pop(node_id, None)

    @event("LockExpired")
    def _lock_expired(
        self, node_id: str, holder: str, expires_at: float, actor_id: str, workspace_id: str
    ) -> None:
        self._locks().pop(node_id, None)

    # -- comments ------------------------------------------------------------------------------
    #
    # Threads on the workflow (node None) or on a node; a thread is its first comment's id.
    # Bodies are Markdown kept as text. A deleted comment stays as a tombstone (its thread
    # reads on); a removed node's threads stay too, orphaned.

    def _threads(self) -> dict[str, dict[str, Any]]:
        return self.__dict__.setdefault("threads", {})  # type: ignore[no-any-return]

    def _comments(self) -> dict[str, dict[str, Any]]:
        return self.__dict__.setdefault("comments", {})  # type: ignore[no-any-return]

    def comment(self, comment_id: str) -> dict[str, Any]:
        found = self._comments().get(comment_id)
        if found is None or found["deleted"]:
            raise NotFound(f"comment {comment_id!r} does not exist", comment_id=comment_id)
        return found

    @staticmethod
    def _body(body: str, mentions: list[str], members: frozenset[str]) -> list[str]:
        if not isinstance(body, str) or not body.strip():
            raise ValidationFailed("a comment needs some text", field="body")
        if len(body) > MAX_COMMENT:
            raise ValidationFailed(f"a comment is at most {MAX_COMMENT} characters", field="body")
        check_text(body, "body")
        mentioned = list(dict.fromkeys(mentions))
        if len(mentioned) > MAX_MENTIONS:
            raise ValidationFailed(f"at most {MAX_MENTIONS} mentions", field="mentions")
        strangers = [m for m in mentioned if m not in members]
        if strangers:
            raise ValidationFailed(
                f"mentions must be members of the workspace: {', '.join(strangers[:5])}",
                field="mentions",
            )
        return mentioned

    def add_comment(
        self,
        node_id: str | None,
        body: str,
        mentions: list[str],
        members: frozenset[str],
        meta: Meta,
    ) -> str:
        """Start a thread on the workflow or a node; returns the comment's (and thread's) id."""
        if node_id is not None:
            self.node(node_id)
        mentioned = self._body(body, mentions, members)
        comment_id = new_id("c")
        self._comment_added(
            comment_id, comment_id, node_id, body, mentioned, meta.actor_id, self.workspace_id,
            meta.client_op_id,
        )  # fmt: skip
        return comment_id

    def reply(
        self, to: str, body: str, mentions: list[str], members: frozenset[str], meta: Meta
    ) -> str:
        """Reply in the thread of comment `to`; returns the reply's id."""
        thread_id = self.comment(to)["thread_id"]
        mentioned = self._body(body, mentions, members)
        comment_id = new_id("c")
        node_id = self._threads()[thread_id]["node_id"]
        self._comment_added(
            comment_id, thread_id, node_id, body, mentioned, meta.actor_id, self.workspace_id,
            meta.client_op_id,
        )  # fmt: skip
        return comment_id

    def edit_comment(
        self, comment_id: str, body: str, mentions: list[str], members: frozenset[str], meta: Meta
    ) -> None:
        """Its author only."""
        comment = self.comment(comment_id)
        if comment["author"] != meta.actor_id:
            raise Forbidden("only its author edits a comment", comment_id=comment_id)
        mentioned = self._body(body, mentions, members)
        self._comment_edited(
            comment_id, body, mentioned, meta.actor_id, self.workspace_id, meta.client_op_id
        )

    def delete_comment(self, comment_id: str, as_admin: bool, meta: Meta) -> None:
        """Its author, or an admin; a tombstone stays in its thread."""
        comment = self.comment(comment_id)
        if comment["author"] != meta.actor_id and not as_admin:
            raise Forbidden("only its author or an admin deletes a comment", comment_id=comment_id)
        self._comment_deleted(comment_id, meta.actor_id, self.workspace_id, meta.client_op_id)

    def resolve_thread(self, thread_id: str, resolved: bool, meta: Meta) -> None:
        """Resolve (or reopen) a thread; anyone who may comment may."""
        thread = self._threads().get(thread_id)
        if thread is None:
            raise NotFound(f"thread {thread_id!r} does not exist", thread_id=thread_id)
        if thread["resolved"] == resolved:
            state = "resolved" if resolved else "open"
            raise ValidationFailed(f"the thread is {state} already", field="threadId")
        if resolved:
            self._thread_resolved(thread_id, meta.actor_id, self.workspace_id, meta.client_op_id)
        else:
            self._thread_reopened(thread_id, meta.actor_id, self.workspace_id, meta.client_op_id)

    @event("CommentAdded")
    def _comment_added(
        self,
        comment_id: str,
        thread_id: str,
        node_id: str | None,
        body: str,
        mentions: list[str],
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        if thread_id == comment_id:
            self._threads()[thread_id] = {"node_id": node_id, "resolved": False}
        self._comments()[comment_id] = {
            "thread_id": thread_id,
            "author": actor_id,
            "deleted": False,
        }
        self._remember(client_op_id, comment_id)

    @event("CommentEdited")
    def _comment_edited(
        self,
        comment_id: str,
        body: str,
        mentions: list[str],
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        self._remember(client_op_id, None)

    @event("CommentDeleted")
    def _comment_deleted(
        self, comment_id: str, actor_id: str, workspace_id: str, client_op_id: str | None
    ) -> None:
        self._comments()[comment_id]["deleted"] = True
        self._remember(client_op_id, None)

    @event("ThreadResolved")
    def _thread_resolved(
        self, thread_id: str, actor_id: str, workspace_id: str, client_op_id: str | None
    ) -> None:
        self._threads()[thread_id]["resolved"] = True
        self._remember(client_op_id, None)

    @event("ThreadReopened")
    def _thread_reopened(
        self, thread_id: str, actor_id: str, workspace_id: str, client_op_id: str | None
    ) -> None:
        self._threads()[thread_id]["resolved"] = False
        self._remember(client_op_id, None)

    # -- node edits ----------------------------------------------------------------------------

    def update_node(
        self, node_id: str, name: str | None, config: dict[str, Any] | None, meta: Meta
    ) -> None:
        node = self.node(node_id)
        if name is None and config is None:
            raise ValidationFailed("nothing to update: give a name or a config", field="input")
        if config is not None:
            config = _config(config)
            check_config(node["type"], config)
        if name is not None:
            name = check_name(name)
        now = time.time()
        self._guard(node_id, meta, now)
        self._node_updated(
            node_id, name, config, meta.actor_id, self.workspace_id, meta.client_op_id
        )

    @event("NodeUpdated")
    def _node_updated(
        self,
        node_id: str,
        name: str | None,
        config: dict[str, Any] | None,
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        node = self.nodes[node_id]
        if name is not None:
            node["name"] = name
        if config is not None:
            node["config"] = config
        self._remember(client_op_id, None)

    def move_node(self, node_id: str, x: float, y: float, meta: Meta) -> None:
        self.node(node_id)
        # Checked before the guard, which records the holder's renewal: a refused command
        # must leave no event behind.
        x, y = _coordinate(x, "x"), _coordinate(y, "y")
        self._guard(node_id, meta, time.time())
        self._node_moved(node_id, x, y, meta.actor_id, self.workspace_id, meta.client_op_id)

    @event("NodeMoved")
    def _node_moved(
        self,
        node_id: str,
        x: float,
        y: float,
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        self.nodes[node_id]["x"] = x
        self.nodes[node_id]["y"] = y
        self._remember(client_op_id, None)

    def remove_node(self, node_id: str, meta: Meta) -> None:
        """Remove the node, its edges and its lock (its comment threads stay, orphaned)."""
        self.node(node_id)
        self._guard(node_id, meta, time.time())
        attached = sorted(
            edge_id
            for edge_id, edge in self.edges.items()
            if node_id in (edge["source"], edge["target"])
        )
        self._node_removed(node_id, attached, meta.actor_id, self.workspace_id, meta.client_op_id)

    @event("NodeRemoved")
    def _node_removed(
        self,
        node_id: str,
        removed_edge_ids: list[str],
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        del self.nodes[node_id]
        for edge_id in removed_edge_ids:
            self.edges.pop(edge_id, None)
        self._locks().pop(node_id, None)
        for thread in self._threads().values():  # they stay, and stay apart from any new
            if thread["node_id"] == node_id:  # node given the same id later
                thread["orphaned"] = True
        self._remember(client_op_id, None)

    def connect(
        self, source_id: str, target_id: str, label: str | None, condition: str | None, meta: Meta
    ) -> str:
        self.node(source_id)
        self.node(target_id)
        if source_id == target_id:
            raise ValidationFailed("an edge cannot connect a node to itself", field="targetId")
        label = _optional_text(label, MAX_LABEL, "label")
        condition = _optional_text(condition, MAX_CONDITION, "condition")
        if condition is not None:
            broken = condition_errors(condition)
            if label == "error" or "control.loop" in (
                self.nodes[source_id]["type"],
                self.nodes[target_id]["type"],
            ):
                # An error edge is taken on failure, a loop's edges frame its body: neither
                # is decided by an output.
                broken = ["condition: not on an error edge or an edge of a loop"]
            if broken:
                raise ValidationFailed(broken[0], field="condition")
        for edge in self.edges.values():
            if (edge["source"], edge["target"]) != (source_id, target_id):
                continue
            if edge["label"] == label:
                raise ValidationFailed(
                    f"an edge {source_id} → {target_id} with this label already exists",
                    field="targetId",
                )
            if condition is not None or edge.get("condition") is not None:
                # An execution records a condition's verdict per target.
                raise ValidationFailed(
                    f"an edge {source_id} → {target_id} with a condition must be the only "
                    "edge between them",
                    field="condition" if condition is not None else "targetId",
                )
        edge_id = new_id("e")
        self._connected(
            edge_id,
            source_id,
            target_id,
            label,
            condition,
            meta.actor_id,
            self.workspace_id,
            meta.client_op_id,
        )
        return edge_id

    @event("NodesConnected")
    def _connected(
        self,
        edge_id: str,
        source_id: str,
        target_id: str,
        label: str | None,
        condition: str | None,
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        self.edges[edge_id] = {
            "source": source_id,
            "target": target_id,
            "label": label,
            "condition": condition,
        }
        self._remember(client_op_id, edge_id)

    def disconnect(self, edge_id: str, meta: Meta) -> None:
        self.edge(edge_id)
        self._disconnected(edge_id, meta.actor_id, self.workspace_id, meta.client_op_id)

    @event("NodesDisconnected")
    def _disconnected(
        self, edge_id: str, actor_id: str, workspace_id: str, client_op_id: str | None
    ) -> None:
        del self.edges[edge_id]
        self._remember(client_op_id, None)

    def publish(self, note: str, meta: Meta) -> int:
        if not self.nodes:
            raise ValidationFailed("an empty workflow cannot be published", field="workflowId")
        number = len(self.published) + 1
        self._published(
            number,
            _optional_text(note, MAX_DESCRIPTION, "note") or "",
            meta.actor_id,
            self.workspace_id,
            meta.client_op_id,
        )
        return number

    @event("Published")
    def _published(
        self,
        version_number: int,
        note: str,
        actor_id: str,
        workspace_id: str,
        client_op_id: str | None,
    ) -> None:
        # The version frozen is the one this event creates: the graph as of the event before.
        self.published.append({"number": version_number, "version": self.version, "note": note})
        self._remember(client_op_id, str(version_number))

    # -- views -------------------------------------------------------------------------------

    def graph(self) -> dict[str, Any]:
        """The workflow as plain data (what time travel returns)."""
        return {
            "id": str(self.id),
            "workspace_id": self.workspace_id,
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "nodes": {k: dict(v) for k, v in self.nodes.items()},
            "edges": {k: dict(v) for k, v in self.edges.items()},
            "published": [dict(p) for p in self.published],
        }
