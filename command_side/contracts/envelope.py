"""The public event envelope: what Kafka carries and every downstream consumer reads.

Stored domain events may change shape; consumers only ever see envelopes at the newest
schema version of their type, because `upcast` runs on everything read back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from command_side.contracts.schemas import NULLABLE_FIELDS
from infra import jsontext

#: Fields of a stored event that the envelope carries at its top level (or drops).
_ENVELOPE_FIELDS = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
    "actor_id",
    "workspace_id",
    "workflow_id",
}
#: Secrets kept in stored events that no consumer may ever see.
PRIVATE_FIELDS = frozenset(
    {"password_hash", "totp_secret", "token_hash", "ciphertext", "task", "dead_letter"}
)
_DROPPED = _ENVELOPE_FIELDS | PRIVATE_FIELDS
#: Outside the workflow context `workflow_id` is not the aggregate id: it stays in `data`.
_DROPPED_ELSEWHERE = _DROPPED - {"workflow_id"}
_EVENT_ID_NAMESPACE = UUID("6f1f2b8e-3c55-4d8c-9a7e-0a4f3c1d2e10")

Envelope = dict[str, Any]
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

#: Newest schema version of each public event type; a type not named is at version 1.
SCHEMA_VERSIONS: dict[str, int] = {}
#: `(type, from_version)` → function turning `data` of that version into the next one.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    if type(value) in _JSON_SCALARS:  # the common case, first
        return value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def event_type(context: str, event: Any) -> str:
    return f"{context}.{type(event).__name__}"


def to_envelope(context: str, event: Any, position: int) -> Envelope:
    """Build the public envelope of a stored domain event at notification `position`."""
    fields = vars(event)
    aggregate_id = str(event.originator_id)
    version = int(event.originator_version)
    kind = event_type(context, event)
    dropped = _DROPPED if context == "workflow" else _DROPPED_ELSEWHERE
    # Fields added to an event type after some were stored: those read as null.
    data = {name: None for name in NULLABLE_FIELDS.get(kind, ())}
    data.update({k: _plain(v) for k, v in fields.items() if k not in dropped})
    return {
        # Deterministic: a re-published event keeps its id, so consumers can dedupe on it.
        "event_id": str(uuid5(_EVENT_ID_NAMESPACE, f"{aggregate_id}/{version}")),
        "type": kind,
        "schema_version": SCHEMA_VERSIONS.get(kind, 1),
        "aggregate_id": aggregate_id,
        "aggregate_version": version,
        "position": position,
        "occurred_at": event.timestamp.isoformat(),
        "workspace_id": str(fields.get("workspace_id", "")),
        "actor_id": str(fields.get("actor_id", "")),
        "data": data,
    }


def upcast(envelope: Envelope) -> Envelope:
    """Bring an envelope of an older schema version up to the newest one."""
    kind = envelope["type"]
    target = SCHEMA_VERSIONS.get(kind, 1)
    version = int(envelope.get("schema_version", 1))
    if version == target:
        return envelope
    data = envelope["data"]
    while version < target:
        data = UPCASTERS[(kind, version)](dict(data))
        version += 1
    return {**envelope, "schema_version": version, "data": data}


def encode(envelope: Envelope) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


class EnvelopeError(ValueError):
    """A message is not a well-formed envelope."""


def decode(raw: bytes) -> Envelope:
    """Parse and upcast a Kafka message value; malformed input raises EnvelopeError."""
    try:
        envelope = jsontext.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and nesting too deep included
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise EnvelopeError("an envelope must be a JSON object")
    missing = [
        k for k in ("type", "aggregate_id", "aggregate_version", "data") if k not in envelope
    ]
    if missing:
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
    if not isinstance(envelope["aggregate_version"], int) or not isinstance(envelope["data"], dict):
        raise EnvelopeError("aggregate_version must be an integer and data an object")
    try:
        return upcast(envelope)
    except KeyError as exc:
        raise EnvelopeError(f"no upcaster for {exc}") from exc
