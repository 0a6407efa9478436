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


#: The most an envelope may take as a Kafka message: brokers refuse more than about 1 MiB by
#: default (Apache Kafka's `message.max.bytes`, kafka-python's `max_request_size`).
MAX_ENVELOPE_BYTES = 900_000


def fitted(envelope: Envelope, limit: int = MAX_ENVELOPE_BYTES) -> tuple[Envelope, bytes]:
    """The envelope as it goes to Kafka, encoded, in at most `limit` bytes. An event larger
    than that (a long webhook body in its inputs, say) would never be accepted, and would
    hold up every event behind it; it goes out with its largest `data` fields left in the
    event store instead, named in `in_store`. A consumer that needs them reads the event from
    the store (the projector does; `workflowEvents` and `executionUpdates` always do)."""
    raw = encode(envelope)
    if len(raw) <= limit:
        return envelope, raw
    data = dict(envelope["data"])
    largest_first = sorted(data, key=lambda k: len(json.dumps(data[k])), reverse=True)
    left: list[str] = []
    for key in largest_first:
        del data[key]
        left.append(key)
        slim = {**envelope, "data": data, "in_store": sorted(left)}
        raw = encode(slim)
        if len(raw) <= limit:
            break
    return slim, raw


class EnvelopeError(ValueError):
    """A message is not a well-formed envelope."""


def decode(raw: bytes | None) -> Envelope:
    """Parse and upcast a Kafka message value; malformed input raises EnvelopeError."""
    if not isinstance(raw, bytes | bytearray | str):
        raise EnvelopeError("no value (a tombstone?)")
    try:
        envelope = jsontext.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and nesting too deep included
        raise EnvelopeError(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise EnvelopeError("an envelope must be a JSON object")
    missing = [k for k in _REQUIRED if k not in envelope]
    if missing:
        raise EnvelopeError(f"envelope lacks {', '.join(missing)}")
    kind, version = envelope["type"], envelope["aggregate_version"]
    if not isinstance(kind, str) or "." not in kind:
        raise EnvelopeError("type must be <context>.<event>")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EnvelopeError("aggregate_version must be a positive integer")
    if not isinstance(envelope["data"], dict):
        raise EnvelopeError("data must be an object")
    if not all(isinstance(envelope[k], str) for k in ("aggregate_id", "workspace_id")):
        raise EnvelopeError("aggregate_id and workspace_id must be strings")
    try:
        UUID(envelope["aggregate_id"])
    except ValueError:
        raise EnvelopeError("aggregate_id must be a UUID") from None
    schema_version = envelope.get("schema_version", 1)
    if not isinstance(schema_version, int) or isinstance(schema_version, bool):
        raise EnvelopeError("schema_version must be an integer")
    try:
        return upcast(envelope)
    except KeyError as exc:
        raise EnvelopeError(f"no upcaster for {exc}") from exc
    except (TypeError, ValueError) as exc:  # an upcaster given data it cannot read
        raise EnvelopeError(f"cannot upcast {kind}: {exc}") from exc


_REQUIRED = ("type", "aggregate_id", "aggregate_version", "workspace_id", "data")
