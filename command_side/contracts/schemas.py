"""JSON Schemas of the public envelope, one per event type (`autoops schemas` prints them)."""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_OPT_STR = {"type": ["string", "null"]}
_NUM = {"type": "number"}
_COMMON = {"client_op_id": _OPT_STR}

_DATA: dict[str, dict[str, Any]] = {
    "workflow.Created": {"name": _STR, "description": _STR},
    "workflow.Renamed": {"name": _STR},
    "workflow.DescriptionChanged": {"description": _STR},
    "workflow.NodeAdded": {
        "node_id": _STR,
        "node_type": _STR,
        "name": _STR,
        "config": {"type": "object"},
        "x": _NUM,
        "y": _NUM,
    },
    "workflow.NodeUpdated": {
        "node_id": _STR,
        "name": _OPT_STR,
        "config": {"type": ["object", "null"]},
    },
    "workflow.NodeMoved": {"node_id": _STR, "x": _NUM, "y": _NUM},
    "workflow.NodeRemoved": {"node_id": _STR, "removed_edge_ids": {"type": "array", "items": _STR}},
    "workflow.NodesConnected": {
        "edge_id": _STR,
        "source_id": _STR,
        "target_id": _STR,
        "label": _OPT_STR,
        "condition": _OPT_STR,
    },
    "workflow.NodesDisconnected": {"edge_id": _STR},
    "workflow.Published": {"version_number": {"type": "integer", "minimum": 1}, "note": _STR},
    "workflow.NodeLocked": {
        "node_id": _STR,
        "holder": _STR,
        "expires_at": _NUM,
        "ttl_s": _NUM,
    },
    "workflow.LockRenewed": {"node_id": _STR, "expires_at": _NUM},
    "workflow.NodeUnlocked": {"node_id": _STR},
    "workflow.LockBroken": {"node_id": _STR, "holder": _STR},
    "workflow.LockExpired": {"node_id": _STR, "holder": _STR, "expires_at": _NUM},
    "workflow.CommentAdded": {
        "comment_id": _STR,
        "thread_id": _STR,
        "node_id": _OPT_STR,
        "body": _STR,
        "mentions": {"type": "array", "items": _STR},
    },
    "workflow.CommentEdited": {
        "comment_id": _STR,
        "body": _STR,
        "mentions": {"type": "array", "items": _STR},
    },
    "workflow.CommentDeleted": {"comment_id": _STR},
    "workflow.ThreadResolved": {"thread_id": _STR},
    "workflow.ThreadReopened": {"thread_id": _STR},
}


_ROLE = {"enum": ["viewer", "editor", "admin", "owner"]}
_TIME = {"type": "number"}

_DATA.update(
    {
        "identity.AddressNoted": {"email": _STR},
        "identity.AddressClaimed": {"user_id": _STR},
        "identity.UserRegistered": {"user_id": _STR, "email": _STR, "display_name": _STR},
        "identity.PasswordChanged": {"at": _TIME},
        "identity.JoinedWorkspace": {"role": _ROLE},
        "identity.LeftWorkspace": {},
        "identity.TotpRequested": {},
        "identity.TotpEnabled": {},
        "identity.TotpDisabled": {},
        "identity.LoginSucceeded": {
            "method": _STR,
            "client_address": _STR,
            "totp_step": {"type": "integer", "minimum": 0},
        },
        "identity.LoginFailed": {"reason": _STR, "client_address": _STR},
        "identity.WorkspaceCreated": {"name": _STR},
        "identity.MemberAdded": {
            "user_id": _STR,
            "email": _STR,
            "display_name": _STR,
            "role": _ROLE,
        },
        "identity.MemberInvited": {"member_id": _STR, "email": _STR, "role": _ROLE},
        "identity.InvitationAccepted": {"member_id": _STR, "user_id": _STR, "display_name": _STR},
        "identity.MemberRoleChanged": {"member_id": _STR, "role": _ROLE, "previous": _ROLE},
        "identity.MemberRemoved": {"member_id": _STR, "email": _STR},
        "identity.SessionStarted": {"session_id": _STR, "user_id": _STR, "expires_at": _TIME},
        "identity.SessionRefreshed": {"expires_at": _TIME},
        "identity.SessionRevoked": {"reason": _STR},
    }
)


_ANY: dict[str, Any] = {}
_OBJ = {"type": "object"}
_OPT_OBJ = {"type": ["object", "null"]}
_INT = {"type": "integer", "minimum": 0}
_OPT_INT = {"type": ["integer", "null"]}
_OPT_NUM = {"type": ["number", "null"]}
#: Any JSON value, null included (a field added later: older events read with null there).
_OPT_ANY = {"type": ["null", "boolean", "number", "string", "array", "object"]}
_BOOL = {"type": "boolean"}
_STATUS = {"enum": ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"]}
_STEP = {"node_id": _STR, "attempt": _INT}
_RAN = {"runner_id": _OPT_STR, "started_at": _OPT_NUM, "finished_at": _OPT_NUM}

_DATA.update(
    {
        "execution.ExecutionStarted": {
            "execution_id": _STR,
            "workflow_id": _STR,
            "workflow_version": _INT,
            "nodes": _OBJ,
            "edges": {"type": "array", "items": _OBJ},
            "start": _STR,
            "inputs": _OBJ,
            "vars": _OPT_OBJ,
            "trigger": _OPT_OBJ,
            "parent": _OPT_OBJ,
            "retry_of": _OPT_STR,
            "reused": _OPT_OBJ,
            "max_concurrency": _OPT_INT,
            "timeout_s": _OPT_NUM,
            "outer_steps": _OPT_OBJ,
            "steps_scope": _OPT_STR,
            "inline_steps": {"type": ["array", "null"], "items": _STR},
            "loop_rule": _OPT_INT,
            # A retry from a loop step:
            # {node_id: {items, body: {workflow_id, version}, done: {index: {child_id, output}}}}.
            "reused_items": _OPT_OBJ,
        },
        "execution.ExecutionAdmitted": {"admitted_at": _NUM},
        "execution.StepScheduled": {
            **_STEP,
            "node_type": _STR,
            "not_before": _NUM,
            "input": _ANY,
            "pool": _OPT_STR,
            "started": _BOOL,
        },
        "execution.StepDispatched": {**_STEP, "input": _ANY},
        "execution.StepSucceeded": {
            **_STEP,
            **_RAN,
            "output": _ANY,
            "branch": _OPT_STR,
            "node_type": _OPT_STR,
            "input": _OPT_ANY,
        },
        "execution.StepFailed": {
            **_STEP,
            **_RAN,
            "error_type": _STR,
            "message": _STR,
            "retryable": _BOOL,
            "charged": _BOOL,
            "final": _BOOL,
            "details": _OPT_OBJ,
        },
        "execution.StepSkipped": {"node_id": _STR},
        "execution.EdgesRouted": {
            **_STEP,
            "blocked": {"type": "array", "items": _STR},
            "error": _OPT_STR,
        },
        "execution.StepReused": {
            "node_id": _STR,
            "output": _ANY,
            "branch": _OPT_STR,
            "from_execution": _STR,
            # Reused as failed for good ({type, message}); null for a reused output.
            "error": _OPT_OBJ,
        },
        "execution.LoopItems": {"node_id": _STR, "items": {"type": "array"}, "body": _OBJ},
        "execution.ItemsReused": {
            **_STEP,
            # The item indices done with their outputs in ExecutionStarted.reused_items.
            "indices": {"type": "array", "items": _INT},
            "from_execution": _STR,
        },
        "execution.ChildStarted": {
            **_STEP,
            "index": _OPT_INT,
            "child_id": _STR,
            "workflow_id": _STR,
            "workflow_version": _INT,
        },
        "execution.ChildFinished": {
            **_STEP,
            "index": _OPT_INT,
            "child_id": _STR,
            "status": _STATUS,
            "output": _ANY,
            "error": _OPT_STR,
        },
        "execution.ExecutionFinished": {
            "status": _STATUS,
            "error": _OPT_STR,
            "output": _ANY,
            "abandoned": {"type": ["array", "null"], "items": _STR},
            "sessions": {"type": ["array", "null"], "items": _STR},
        },
        "execution.CredentialCreated": {"name": _STR, "kind": _STR},
        "execution.CredentialReplaced": {"name": _STR, "kind": _STR},
        "execution.CredentialDeleted": {"name": _STR},
        "execution.VariablesCreated": {},
        "execution.VariableSet": {"name": _STR, "value": _ANY},
        "execution.VariableDeleted": {"name": _STR},
    }
)


def schema_for(event_type: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of envelopes of one event type."""
    data = {**_DATA[event_type], **(_COMMON if event_type.startswith("workflow.") else {})}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://autoops.dev/schemas/events/{event_type}.json",
        "title": event_type,
        "type": "object",
        "required": [
            "event_id",
            "type",
            "schema_version",
            "aggregate_id",
            "aggregate_version",
            "position",
            "occurred_at",
            "workspace_id",
            "actor_id",
            "data",
        ],
        "properties": {
            "event_id": {"type": "string", "format": "uuid"},
            "type": {"const": event_type},
            "schema_version": {"type": "integer", "minimum": 1},
            "aggregate_id": {"type": "string", "format": "uuid"},
            "aggregate_version": {"type": "integer", "minimum": 1},
            "position": {"type": "integer", "minimum": 1},
            "occurred_at": {"type": "string", "format": "date-time"},
            "workspace_id": _STR,
            "actor_id": _STR,
            "data": {"type": "object", "properties": data, "additionalProperties": False},
            # An event larger than a Kafka message: these `data` fields are in the store only.
            "in_store": {
                "type": "array",
                "items": {"enum": sorted(data)} if data else False,
                "minItems": 1,
                "uniqueItems": True,
            },
        },
        # Every field is there, unless `in_store` names it.
        **(
            {
                "allOf": [
                    {
                        "if": {
                            "required": ["in_store"],
                            "properties": {"in_store": {"contains": {"const": name}}},
                        },
                        "else": {"properties": {"data": {"required": [name]}}},
                    }
                    for name in sorted(data)
                ]
            }
            if data
            else {}
        ),
    }


EVENT_TYPES: tuple[str, ...] = tuple(_DATA)


def _nullable(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    return kinds == "null" or (isinstance(kinds, list) and "null" in kinds)


#: Per event type, the fields that may be null: a field added later (`StepFailed.details`,
#: `ExecutionFinished.sessions`) is one, and an event stored before it reads with null there.
NULLABLE_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(
        name
        for name, schema in {
            **data,
            **(_COMMON if kind.startswith("workflow.") else {}),
        }.items()
        if _nullable(schema)
    )
    for kind, data in _DATA.items()
}
