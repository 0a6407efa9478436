"""`data.transform` (an object built from rendered templates) and `data.filter` (the items of
a list for which a per-item condition holds)."""

from __future__ import annotations

from typing import Any

from infra.templates import TemplateFailed, render, truthy
from runners.nodes.context import StepContext
from runners.nodes.errors import StepError


#: Text a condition may render to that still means no.
def data_transform(config: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    fields = config.get("fields") or {}
    if not isinstance(fields, dict):
        raise StepError("ConfigError", "fields must be an object")
    return fields


def data_filter(config: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    items, condition = config.get("items"), config.get("condition")
    if not isinstance(items, list):
        raise StepError("ConfigError", "items must be a list")
    if not isinstance(condition, str):
        raise StepError("ConfigError", "condition must be a template")
    variables = config.get("vars") or {}
    # `inputs`, `execution` and the `steps` the condition reads, as the orchestrator saw them.
    scope = config.get("scope") or {}
    kept = []
    for index, item in enumerate(items):
        if ctx.cancelled.is_set():
            raise StepError("Cancelled", "the step was cancelled")
        context = {**scope, "item": item, "index": index, "vars": variables}
        try:
            holds = truthy(render(condition, context))
        except TemplateFailed as exc:
            raise StepError("TemplateError", f"condition (item {index}): {exc}") from None
        if holds:
            kept.append(item)
    return {"items": kept, "count": len(kept)}
