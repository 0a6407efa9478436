"""Config values are templates over `inputs`, `steps.<nodeId>.output`, `vars` and `execution`.

Jinja2's immutable sandbox evaluates them: no access to Python internals (`__class__`, `mro`,
…), no changing a list or mapping in place (a template must not alter the outputs it reads),
and an undefined name is an error rather than an empty string. Work and size are bounded: the
operations that can build a huge value in one step (repetition, concatenation with `+` or
`~`, joins, powers, padding, `format` and `%` on text) are checked against the size of what
they would build before they run, loops share one budget of iterations, and text stops at
MAX_RENDERED. A value that is one expression (`"{{ steps.fetch.output.body.items }}"`) keeps
its type (a list stays a list) and must be JSON data; anything else renders to text.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, meta, nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RENDERED = 256 * 1024
#: Loop iterations (`range`) one render may use in all.
MAX_ITERATIONS = 100_000
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{[-+]?(?P<expr>.*?)[-+]?\}\}\s*$", re.DOTALL)
_PADDING = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_budget: ContextVar[list[int]] = ContextVar("template_budget")


class TemplateFailed(ValueError):
    """A template that does not parse, or fails to evaluate; `path` names the config key."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def _size(value: Any, limit: int = MAX_RENDERED) -> int:
    """About how many characters `value` takes as text or JSON, counted only until it passes
    `limit` (so measuring a huge value stays cheap). A list repeated by reference counts once
    per repetition: that is what rendering it would write."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, Mapping):
        total = 2
        for key, item in value.items():
            total += _size(key, limit) + _size(item, limit) + 2
            if total > limit:
                break
        return total
    if isinstance(value, (list, tuple)):
        total = 2
        for item in value:
            total += _size(item, limit) + 1
            if total > limit:
                break
        return total
    return 8


def size_of(value: Any, limit: int = MAX_RENDERED) -> int:
    """About how many characters `value` takes as JSON, counted only until it passes `limit`."""
    return _size(value, limit)


def _over(size: int, what: str) -> None:
    if size > MAX_RENDERED:
        raise SecurityError(f"{what} would exceed the output limit")


class _Generator(CodeGenerator):
    """Compiles `a ~ b` to a join that checks the size of its result before building it."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, plus limits on the operations that can build huge values in one step."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    @staticmethod
    def bounded_concat(parts: tuple[Any, ...]) -> str:
        _over(sum(_text_size(part) for part in parts), "joining text with ~")
        return "".join(part if isinstance(part, str) else str(part) for part in parts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data first: `body.items` is the "items" key of a JSON body, not dict.items.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _huge_power(left, right):
            raise SecurityError("the power is too large")
        if operator == "*":
            sized, count = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(sized, (str, bytes, list, tuple)) and isinstance(count, int):
                _over(_size(sized) * count, "repetition")
        elif operator == "+":
            kinds = (str, bytes, list, tuple)
            if isinstance(left, kinds) and isinstance(right, kinds):
                _over(_size(left) + _size(right), "concatenation")
        elif operator == "%" and isinstance(left, (str, bytes)):
            raise SecurityError("% formatting is not allowed; join text with ~")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str):
            if name in ("format", "format_map"):
                raise SecurityError("str.format is not allowed; join text with ~")
            if name in _PADDING and any(isinstance(a, int) and a > MAX_RENDERED for a in args):
                raise SecurityError(f"{name} would exceed the output limit")
            if name == "join" and args:
                items = _listed(args[0])
                _over(_joined_size(__obj.__self__, items), "join")
                args = (items, *args[1:])
            if name == "replace" and len(args) >= 2:
                text, old, new = __obj.__self__, str(args[0]), str(args[1])
                if (text.count(old) if old else len(text) + 1) * len(new) > MAX_RENDERED:
                    raise SecurityError("replace would exceed the output limit")
        return super().call(__context, __obj, *args, **kwargs)


def _text_size(value: Any) -> int:
    """About how long `str(value)` is, measured without building it."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return len(str(value))
    return _size(value)


def _listed(items: Any) -> list[Any]:
    """The items of any iterable (a range, a generator, a `map`), refused past the number
    that could fit in the output."""
    listed = list(itertools.islice(iter(items), MAX_RENDERED + 1))
    if len(listed) > MAX_RENDERED:
        raise SecurityError("join would exceed the output limit")
    return listed


def _joined_size(separator: Any, items: list[Any]) -> int:
    size = _text_size(separator) * max(len(items) - 1, 0)
    for item in items:
        size += _text_size(item)
        if size > MAX_RENDERED:
            break
    return size


@pass_eval_context
def _bounded_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
    items = _listed(value)
    if attribute is not None:
        items = [_ENV.getattr(item, attribute) for item in items]
    _over(_joined_size(d, items), "join")
    return _join_filter(eval_ctx, items, d)


@pass_eval_context
def _bounded_replace(
    eval_ctx: Any, value: Any, old: Any, new: Any, count: int | None = None
) -> Any:
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:  # a negative count replaces them all
        hits = min(hits, count)
    _over(len(text) + hits * len(new), "replace")
    return _replace_filter(eval_ctx, text, old, new, count)


def _bounded_indent(value: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
    text = str(value)
    pad = len(width) if isinstance(width, str) else (width if isinstance(width, int) else 0)
    _over(len(text) + (text.count("\n") + 1) * max(pad, 0), "indent")
    return _indent_filter(text, width, first, blank)


def _guarded(name: str, check: Callable[[str, tuple[Any, ...], dict[str, Any]], None]) -> Any:
    """Filter `name`, with `check(name, args, kwargs)` run first on its own arguments (the
    environment or context Jinja passes some filters left out), called as Jinja calls it."""
    original = _ENV.filters[name]
    passes = getattr(original, "jinja_pass_arg", None)

    def bounded(*args: Any, **kwargs: Any) -> Any:
        check(name, args[1:] if passes is not None else args, kwargs)
        return original(*args, **kwargs)

    if passes is not None:
        bounded.jinja_pass_arg = passes  # type: ignore[attr-defined]
    return bounded


def _measured(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """tojson, string, pprint write their value out whole: a value made of shared references
    is small in memory and huge as text."""
    _over(_size(args[0]), name)


def _padded(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """center, wordwrap, truncate: a width or inserted text could make the output huge."""
    text = str(args[0]) if args else ""
    width = args[1] if len(args) > 1 else kwargs.get("width", 80)
    if isinstance(width, int) and width > MAX_RENDERED:
        raise SecurityError(f"{name} would exceed the output limit")
    inserted = kwargs.get("wrapstring") or (args[3] if len(args) > 3 else "")
    if name == "wordwrap" and inserted:
        lines = len(text) // max(width if isinstance(width, int) else 1, 1) + 1
        _over(len(text) + lines * len(str(inserted)), name)


def _finalized(value: Any) -> Any:
    """Every `{{ … }}` of a text template, before it is written out."""
    _over(_text_size(value), "the value")
    return value


def _huge_power(base: Any, exponent: Any) -> bool:
    if not (isinstance(base, int) and isinstance(exponent, int)):
        return False  # float powers overflow on their own, and are caught as failures
    return exponent > 64 or abs(base).bit_length() * max(exponent, 0) > 4096


def _budgeted_range(*args: int) -> range:
    numbers = range(*args)
    budget = _budget.get()
    budget[0] -= len(numbers)
    if budget[0] < 0:
        raise SecurityError(f"templates may loop at most {MAX_ITERATIONS} times in all")
    return numbers


_ENV = _Environment(undefined=StrictUndefined, autoescape=False)
_ENV.globals["range"] = _budgeted_range
_ENV.globals.pop("lipsum", None)  # lorem ipsum by the megabyte: nothing a workflow needs
_join_filter = _ENV.filters["join"]
_ENV.filters["join"] = _bounded_join
for _name in ("center", "wordwrap", "truncate"):
    _ENV.filters[_name] = _guarded(_name, _padded)
for _name in ("tojson", "string", "pprint"):
    _ENV.filters[_name] = _guarded(_name, _measured)
_replace_filter = _ENV.filters["replace"]
_ENV.filters["replace"] = _bounded_replace
_indent_filter = _ENV.filters["indent"]
_ENV.filters["indent"] = _bounded_indent
_ENV.finalize = _finalized


def _no_format(*_: Any, **__: Any) -> Any:
    raise SecurityError("the format filter is not allowed; join text with ~")


_ENV.filters["format"] = _no_format


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


def template_names(config: Any) -> set[str]:
    """The top-level names a config's templates read (`inputs`, `steps`, `item`, …);
    templates that do not parse are left out."""
    names: set[str] = set()
    for _, text in _strings(config):
        if is_template(text):
            names |= _names(text)
    return names


@lru_cache(maxsize=4096)
def _names(text: str) -> frozenset[str]:
    # Asked at every dispatch of a node with per-item templates: parse each text once.
    try:
        return frozenset(meta.find_undeclared_variables(_ENV.parse(text)))
    except TemplateError:
        return frozenset()


#: `steps.items()` and the like read the mapping, not a step called `items`.
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})


def _is_steps(node: Any) -> bool:
    return isinstance(node, nodes.Name) and node.name == "steps"


def step_references(config: Any) -> list[tuple[str, str]]:
    """(key, node id) for each `steps.<id>`, `steps['<id>']` or `steps.get('<id>')` a
    config's templates read. Templates that do not parse, and steps looked up by a computed
    key, are not listed."""
    found = [(path, step) for path, text in _strings(config) for step in _steps_read(text)]
    return list(dict.fromkeys(found))


@lru_cache(maxsize=4096)
def _steps_read(text: str) -> tuple[str, ...]:
    # Asked at every dispatch of a node whose per-item templates read steps: parse once.
    if not is_template(text):
        return ()
    try:
        tree = _ENV.parse(text)
    except TemplateError:
        return ()
    found: list[str] = []
    for ref in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Call)):
        if isinstance(ref, nodes.Call):  # steps.get('<id>')
            method = ref.node
            if (
                isinstance(method, nodes.Getattr)
                and _is_steps(method.node)
                and method.attr == "get"
                and ref.args
                and isinstance(ref.args[0], nodes.Const)
                and isinstance(ref.args[0].value, str)
            ):
                found.append(ref.args[0].value)
        elif not _is_steps(ref.node):  # type: ignore[attr-defined]
            continue
        elif isinstance(ref, nodes.Getattr):
            if ref.attr not in _MAPPING_METHODS:
                found.append(ref.attr)
        elif (
            isinstance(ref, nodes.Getitem)
            and isinstance(ref.arg, nodes.Const)
            and isinstance(ref.arg.value, str)
        ):
            found.append(ref.arg.value)
    return tuple(found)


def condition_errors(condition: str) -> list[str]:
    """Why an edge condition will not do: it must be a template (plain text would always
    hold) that parses."""
    if not is_template(condition):
        return ["condition: must be a template, e.g. {{ output.total > 100 }}"]
    return template_errors({"condition": condition})


def render(value: Any, context: Mapping[str, Any], path: str = "") -> Any:
    """`value` with every template evaluated against `context`; TemplateFailed otherwise."""
    token = _budget.set([MAX_ITERATIONS])
    try:
        return _render(value, context, path)
    finally:
        _budget.reset(token)


def _render(value: Any, context: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, Mapping):
        return {k: _render(v, context, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    if not is_template(value):
        return value
    try:
        single = _SINGLE_EXPRESSION.match(value)
        if single and _is_one_expression(value):
            result = _expression(single["expr"])(**context)
            if isinstance(result, Undefined):
                result._fail_with_undefined_error()
            _over(_size(result), "the value")  # before writing out shared references
            size = len(json.dumps(result))
        else:
            pieces, size = [], 0
            for piece in _template(value).generate(**context):
                size += len(piece)
                if size > MAX_RENDERED:
                    break
                pieces.append(piece)
            result = "".join(pieces)
    except TemplateError as exc:
        raise TemplateFailed(path, f"template failed: {exc}") from None
    except (TypeError, ValueError) as exc:  # json.dumps of a non-JSON value, mostly
        raise TemplateFailed(path, f"template failed: {exc}") from None
    except Exception as exc:  # 1/0, overflow, …: still the template's fault, never a crash
        raise TemplateFailed(path, f"template failed: {type(exc).__name__}: {exc}") from None
    if size > MAX_RENDERED:
        raise TemplateFailed(path, f"template output is larger than {MAX_RENDERED} bytes")
    return result


# Compiled templates by their text: a workflow's configs render again for every execution,
# and compiling costs far more than rendering. Compiled code holds no render state (the loop
# budget lives in a context variable), so sharing it is safe.
@lru_cache(maxsize=4096)
def _expression(source: str) -> Any:
    return _ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str) -> Any:
    return _ENV.from_string(source)


@lru_cache(maxsize=4096)
def _is_one_expression(text: str) -> bool:
    """True for `{{ expr }}` alone (not `{{ a }} and {{ b }}`)."""
    body = _ENV.parse(text).body
    return (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    )


_FALSE_TEXT = frozenset({"", "false", "0", "no", "off", "none", "null"})


def truthy(value: Any) -> bool:
    """Whether a rendered condition holds (`control.if`, `data.filter`): Python truthiness,
    except that text meaning no ("false", "0", "no", "off", "none", "null", blank; any
    case) does not hold either, as a user reading `"false"` expects."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_TEXT
    return bool(value)
