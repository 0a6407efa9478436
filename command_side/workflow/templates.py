"""Config values are templates over `inputs`, `steps.<nodeId>.output`, `vars` and `execution`.

Jinja2's sandbox evaluates them: no access to Python internals (`__class__`, `mro`, …), an
undefined name is an error rather than an empty string, and a rendered value is bounded in
size. A value that is one expression (`"{{ steps.fetch.output.body.items }}"`) keeps its type
(a list stays a list); anything else renders to text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

MAX_RENDERED = 256 * 1024
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class TemplateFailed(ValueError):
    """A template that does not parse, or fails to evaluate; `path` names the config key."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class _Environment(SandboxedEnvironment):
    """The sandbox, plus limits on the operators that can build huge values in one step."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data first: `body.items` is the "items" key of a JSON body, not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("exponent too large")
        if operator == "*":
            sized, count = (left, right) if isinstance(right, int) else (right, left)
            repeated = isinstance(sized, (str, list)) and isinstance(count, int)
            if repeated and len(sized) * count > MAX_RENDERED:
                raise SecurityError("repetition would exceed the output limit")
        return super().call_binop(context, operator, left, right)


_ENV = _Environment(undefined=StrictUndefined, autoescape=False)


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def template_errors(config: Any) -> list[str]:
    """Syntax errors of every template in a config, each naming its key."""
    errors = []
    for path, text in _strings(config):
        if is_template(text):
            try:
                _ENV.parse(text)
            except TemplateError as exc:
                errors.append(f"{path}: template does not parse: {exc}")
    return errors


def render(value: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """`value` with every template evaluated against `context`; TemplateFailed otherwise."""
    if isinstance(value, Mapping):
        return {k: render(v, context, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    if not is_template(value):
        return value
    try:
        single = _SINGLE_EXPRESSION.match(value)
        if single and _is_one_expression(value):
            result = _ENV.compile_expression(single["expr"], undefined_to_none=False)(**context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
        else:
            result = _ENV.from_string(value).render(**context)
    except TemplateError as exc:
        raise TemplateFailed(path, f"template failed: {exc}") from None
    if len(repr(result)) > MAX_RENDERED:
        raise TemplateFailed(path, f"template output is larger than {MAX_RENDERED} bytes")
    return result


def _is_one_expression(text: str) -> bool:
    """True for `{{ expr }}` alone (not `{{ a }} and {{ b }}`)."""
    body = _ENV.parse(text).body
    return (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    )
