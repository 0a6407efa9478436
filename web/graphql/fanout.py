"""Shared delivery for subscriptions whose events are plain data.

Strawberry executes and serialises each event once per subscription: with 500 editors and
watchers on one workflow, one edit is 500 GraphQL executions and 500 JSON encodings of the
same result. When a subscription selects only plain stored fields of its event type (no
resolvers, permissions, arguments, directives or fragments), the result depends only on the
event and the selection, so it is rendered once per api process and selection and the same
text goes to every subscriber: each one costs a string concatenation and a websocket send.

The subscription resolver stays the single place that decides what a subscriber gets (access,
catch-up, gapless order); it only asks `direct_sender(info)` whether it may send rows itself
instead of yielding objects for Strawberry to execute. Anything else takes the ordinary path.
"""

from __future__ import annotations

import contextvars
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import FieldNode, GraphQLLeafType, GraphQLNonNull, GraphQLObjectType
from litestar.exceptions import WebSocketDisconnect
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.types import Info

from web.websocket import SEND_TEXT_NOW, SendTextNow

#: The graphql-transport-ws operation the current task runs (set by `FanoutTransportWSHandler`).
_operation: contextvars.ContextVar[
    tuple[BaseGraphQLTransportWSHandler[Any, Any], Operation[Any, Any]] | None
] = contextvars.ContextVar("autoops_ws_operation", default=None)

#: Strawberry keeps each schema element's definition under this key of the graphql-core one.
_DEFINITION = "strawberry-definition"


class LoopCounter(Collector):
    """A Prometheus counter for the event loop's hottest paths: a plain integer that only the
    loop's thread adds to, read when the metrics are scraped. `Counter.inc` takes a lock each
    time: two per subscriber and event were 3.6 % of the api's time under the live-editing
    load (`bench.collab`)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry = REGISTRY):
        self._name = name
        self._documentation = documentation
        self.value = 0
        registry.register(self)

    def inc(self) -> None:
        self.value += 1

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self.value)


# Metrics are process-wide by nature (prometheus_client's registry); the ratio of the two
# says how much the sharing saves.
RENDERED = LoopCounter(
    "autoops_subscription_renderings", "Subscription events rendered for shared delivery"
)
SHARED_SENDS = LoopCounter(
    "autoops_subscription_shared_messages", "Subscription messages sent from a shared rendering"
)
PUSHED = LoopCounter(
    "autoops_subscription_pushed_messages",
    "Shared subscription messages the event tail sent without waking the subscriber",
)


@dataclass(frozen=True)
class Plan:
    """How to render one subscription's events: its response key and, per selected field,
    (response key, attribute of the event, how graphql-core serialises its value, whether
    it may be null)."""

    response_key: str
    fields: tuple[tuple[str, str | None, Callable[[Any], Any] | str, bool], ...]

    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Part of the renderings' key, looked up once per subscriber and event: hash once.
        object.__setattr__(self, "_hash", hash((self.response_key, self.fields)))

    def __hash__(self) -> int:
        return self._hash

    def render(self, event: Any) -> dict[str, Any]:
        """The `payload` of a `next` message for `event`, as graphql-core would build it.
        Raises `Unshareable` where graphql-core would answer with an error instead."""
        item: dict[str, Any] = {}
        for key, attribute, serialize, nullable in self.fields:
            if attribute is None:  # __typename: `serialize` holds the type's name
                item[key] = serialize
                continue
            value = getattr(event, attribute)
            if value is None:
                if not nullable:
                    raise Unshareable(f"{key} is null")
                item[key] = None
                continue
            try:
                item[key] = serialize(value)  # type: ignore[operator]
            except Exception as exc:
                raise Unshareable(f"{key}: {exc}") from exc
        return {"data": {self.response_key: item}}


class Unshareable(Exception):
    """An event whose result graphql-core would give with errors: it takes the ordinary
    path, so the subscriber gets exactly those errors."""


def plan_of(info: Info[Any, Any]) -> Plan | None:
    """A plan when the subscription's selection is plain stored data, None otherwise."""
    raw = info._raw_info
    if len(raw.field_nodes) != 1:
        return None
    node = raw.field_nodes[0]
    event_type = raw.return_type.of_type if isinstance(raw.return_type, GraphQLNonNull) else None
    if (
        node.directives
        or node.selection_set is None
        or not isinstance(event_type, GraphQLObjectType)
    ):
        return None
    fields: list[tuple[str, str | None, Callable[[Any], Any] | str, bool]] = []
    for selection in node.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives or selection.arguments:
            return None
        name = selection.name.value
        key = selection.alias.value if selection.alias else name
        if name == "__typename":
            fields.append((key, None, event_type.name, False))
            continue
        member = event_type.fields.get(name)
        leaf = member.type.of_type if member and isinstance(member.type, GraphQLNonNull) else None
        leaf = leaf or (member.type if member else None)
        definition = member.extensions.get(_DEFINITION) if member else None
        if (
            not isinstance(leaf, GraphQLLeafType)
            or definition is None
            or definition.base_resolver is not None
            or definition.permission_classes
            or definition.extensions
        ):
            return None
        nullable = not isinstance(member.type, GraphQLNonNull)  # type: ignore[union-attr]
        fields.append((key, definition.python_name, leaf.serialize, nullable))
    key = node.alias.value if node.alias else node.name.value
    return Plan(key, tuple(fields))


class Renderings:
    """Rendered payloads by (stream, event, plan), the oldest dropped past `max_chars` in
    all: an event is rendered once per process and selection however many subscribers it
    has, and a burst of large events (node configs run to 64 KiB) cannot grow it unbounded."""

    def __init__(self, max_chars: int = 16_000_000) -> None:
        self._max_chars = max_chars
        self._chars = 0
        self._texts: OrderedDict[tuple[str, int, Plan], str] = OrderedDict()

    def text(self, stream: str, version: int, plan: Plan, make: Callable[[], Any]) -> str:
        key = (stream, version, plan)
        text = self._texts.get(key)
        if text is None:
            text = json.dumps(plan.render(make()), separators=(",", ":"))
            RENDERED.inc()
            self._texts[key] = text
            self._chars += len(text)
            while self._chars > self._max_chars and len(self._texts) > 1:
                self._chars -= len(self._texts.popitem(last=False)[1])
        return text

    def __len__(self) -> int:
        return len(self._texts)


class DirectSender:
    """Sends one subscription's `next` messages straight to its websocket, pre-rendered."""

    def __init__(
        self,
        handler: BaseGraphQLTransportWSHandler[Any, Any],
        operation: Operation[Any, Any],
        plan: Plan,
        renderings: Renderings,
    ) -> None:
        self.plan = plan
        self._handler = handler
        self._operation = operation
        self._renderings = renderings
        self._prefix = '{"id":' + json.dumps(operation.id) + ',"type":"next","payload":'
        self._gone = False
        scope = handler.websocket.ws.scope  # type: ignore[attr-defined]
        self._send_now: SendTextNow | None = scope.get("extensions", {}).get(SEND_TEXT_NOW)

    def send_now(self, stream: str, version: int, make: Callable[[], Any]) -> bool:
        """`send` without awaiting anything, for the event tail to call (`Watch.push`); False
        when it cannot be done so (not shareable, no synchronous send on this connection, or
        its write buffer full): the subscriber's task then sends it with `send`."""
        if self._gone or self._operation.completed:
            return True
        if self._send_now is None:
            return False
        message = self._message(stream, version, make)
        if message is None or not self._queued(message):
            return False
        PUSHED.inc()
        return True

    async def send(self, stream: str, version: int, make: Callable[[], Any]) -> bool:
        """Send the event `version` of `stream` (built by `make` if not rendered yet); False
        when it cannot be shared (yield it to Strawberry instead)."""
        if self._gone or self._operation.completed:
            return True
        message = self._message(stream, version, make)
        if message is None:
            return False
        if self._queued(message):  # no awaited ASGI layers
            return True
        try:
            await self._handler.websocket.ws.send_data(message)  # type: ignore[attr-defined]
            SHARED_SENDS.inc()
        except (WebSocketDisconnect, OSError, RuntimeError):
            # Gone, or closed by the server (another operation's protocol error): the
            # connection's own loop ends and cancels this operation.
            self._gone = True
        return True

    def _message(self, stream: str, version: int, make: Callable[[], Any]) -> str | None:
        """The `next` message of the event, None when it cannot be shared."""
        try:
            text = self._renderings.text(stream, version, self.plan, make)
        except Unshareable:
            return None
        return self._prefix + text + "}"

    def _queued(self, message: str) -> bool:
        """Queued through the protocol's synchronous send (when it has one and takes it)."""
        if self._send_now is None or not self._send_now(message):
            return False
        SHARED_SENDS.inc()
        return True


def direct_sender(info: Info[Any, Any], renderings: Renderings) -> DirectSender | None:
    """A sender for this subscription when it runs over graphql-transport-ws and selects
    plain data; None: yield objects as usual."""
    current = _operation.get()
    if current is None:
        return None
    plan = plan_of(info)
    return DirectSender(*current, plan, renderings) if plan else None


class FanoutTransportWSHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """graphql-transport-ws, with each operation's task knowing its operation (for
    `direct_sender`)."""

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        _operation.set((self, operation))  # the operation's own task: no reset needed
        await super().run_operation(operation)
