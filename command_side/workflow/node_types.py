"""The catalog of node types: category, description, runner pool and the JSON Schema of each
type's config.

Edits check a config's shape (known keys, right types) but not its completeness, so a draft
can hold a half-configured node the way an editor is used; `validateWorkflow` and starting an
execution check the whole schema, required keys included.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from command_side.errors import ValidationFailed
from infra.templates import is_template, template_errors

_STR: dict[str, Any] = {"type": "string"}
_TEMPLATE = {"type": "string", "description": "a template over inputs, steps, vars, execution"}
#: The latest `until` a delay takes, in epoch seconds: 9999-12-31T23:59:59Z.
LATEST_UNTIL = 253_402_300_799
_RETRY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "initial_interval_s": {"type": "number", "exclusiveMinimum": 0},
        "backoff": {"type": "number", "minimum": 1, "maximum": 10},
        "max_interval_s": {"type": "number", "exclusiveMinimum": 0},
        "non_retryable": {"type": "array", "items": _STR},
    },
}
#: Keys every node type takes.
_COMMON: dict[str, Any] = {
    "notes": {"type": "string", "maxLength": 10_000},
    "retry": _RETRY,
    "timeout_s": {"type": "number", "exclusiveMinimum": 0},
}


@dataclass(frozen=True)
class NodeType:
    type: str
    category: str
    description: str
    properties: dict[str, Any]
    required: tuple[str, ...] = ()
    pool: str = "default"

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of a complete config of this type."""
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.type,
            "type": "object",
            "additionalProperties": False,
            "properties": {**_COMMON, **self.properties},
            "required": list(self.required),
        }


def _t(kind: str, description: str, required: tuple[str, ...] = (), **properties: Any) -> NodeType:
    return NodeType(kind, kind.split(".", 1)[0], description, properties, required)


#: Per-workflow limit of executions running at once (a trigger's timeout_s bounds each).
_CONCURRENCY = {"type": "integer", "minimum": 1, "maximum": 10_000}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_FORMATS = {"enum": ["csv", "json", "text"]}

_SELECTOR = {
    "type": "string",
    "minLength": 1,
    "maxLength": 2000,
    "description": 'CSS, text=..., role=button[name="Save"], data-testid=... or xpath=...',
}
_NON_EMPTY = {"type": "string", "minLength": 1}


def _b(kind: str, description: str, required: tuple[str, ...] = (), **properties: Any) -> NodeType:
    return NodeType(f"browser.{kind}", "browser", description, properties, required, "browser")


BROWSER_TYPES = (
    _b(
        "open",
        "Open the execution's browser session (a new context and page), optionally at a URL.",
        viewport={
            "type": "object",
            "additionalProperties": False,
            "required": ["width", "height"],
            "properties": {
                "width": {"type": "integer", "minimum": 1, "maximum": 10_000},
                "height": {"type": "integer", "minimum": 1, "maximum": 10_000},
            },
        },
        user_agent=_STR,
        locale=_STR,
        timezone_id=_STR,
        storage_state={"type": "object", "description": "cookies and origins, as Playwright"},
        url=_TEMPLATE,
        wait_until={"enum": ["load", "domcontentloaded", "networkidle", "commit"]},
    ),
    _b(
        "goto",
        "Go to a URL; outputs the final URL, status and title.",
        ("url",),
        url=_TEMPLATE,
        wait_until={"enum": ["load", "domcontentloaded", "networkidle", "commit"]},
    ),
    _b(
        "click",
        "Click an element.",
        ("selector",),
        selector=_SELECTOR,
        button={"enum": ["left", "right", "middle"]},
    ),
    _b("double_click", "Double-click an element.", ("selector",), selector=_SELECTOR),
    _b(
        "fill",
        "Replace the value of an input: `value`, or a credential's secret (a password) that "
        "never shows in the workflow, its events or outputs.",
        ("selector",),
        selector=_SELECTOR,
        value=_STR,
        credential=_STR,
        field=_STR,
    ),
    _b(
        "type",
        "Type text key by key (delay_ms between keys).",
        ("selector", "text"),
        selector=_SELECTOR,
        text=_NON_EMPTY,
        delay_ms={"type": "number", "minimum": 0, "maximum": 1000},
    ),
    _b(
        "press",
        "Press a key or chord (Enter, Control+A) on an element or the page.",
        ("key",),
        selector=_SELECTOR,
        key=_NON_EMPTY,
    ),
    _b(
        "select_option",
        "Select options of a <select> by value or label.",
        ("selector", "values"),
        selector=_SELECTOR,
        values={"oneOf": [_NON_EMPTY, {"type": "array", "items": _STR, "minItems": 1}]},
    ),
    _b("check", "Check a checkbox or radio button.", ("selector",), selector=_SELECTOR),
    _b("uncheck", "Uncheck a checkbox.", ("selector",), selector=_SELECTOR),
    _b("hover", "Move the mouse over an element.", ("selector",), selector=_SELECTOR),
    _b(
        "upload_file",
        "Set the files of a file input from artifacts or workspace files.",
        ("selector", "files"),
        selector=_SELECTOR,
        files={
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"sha256": _STR, "name": _STR, "path": _STR},
            },
        },
    ),
    _b(
        "download",
        "Click what starts a download; the file becomes an artifact (and a "
        "workspace file with save_as).",
        ("selector",),
        selector=_SELECTOR,
        save_as=_STR,
    ),
    _b(
        "wait_for",
        "Wait for an element's state, a URL or a load state.",
        selector=_SELECTOR,
        state={"enum": ["attached", "detached", "visible", "hidden"]},
        url=_STR,
        load_state={"enum": ["load", "domcontentloaded", "networkidle"]},
    ),
    _b(
        "extract_text",
        "The text of an element (all: of every match).",
        ("selector",),
        selector=_SELECTOR,
        all={"type": "boolean"},
    ),
    _b(
        "extract_attribute",
        "An attribute of an element (all: of every match).",
        ("selector", "attribute"),
        selector=_SELECTOR,
        attribute=_NON_EMPTY,
        all={"type": "boolean"},
    ),
    _b(
        "extract_table",
        "An HTML table as rows keyed by its header cells.",
        ("selector",),
        selector=_SELECTOR,
    ),
    _b(
        "evaluate",
        "Run JavaScript in the page; outputs its JSON result.",
        ("expression",),
        expression=_NON_EMPTY,
        arg={},
    ),
    _b(
        "screenshot",
        "A PNG of the page or an element, as an artifact.",
        selector=_SELECTOR,
        full_page={"type": "boolean"},
    ),
    _b(
        "assert_text",
        "Fail unless an element's text contains (exact: equals) the text.",
        ("selector", "text"),
        selector=_SELECTOR,
        text=_STR,
        exact={"type": "boolean"},
    ),
    _b(
        "assert_visible",
        "Fail unless an element is visible (visible: false: hidden).",
        ("selector",),
        selector=_SELECTOR,
        visible={"type": "boolean"},
    ),
    _b("close", "Close the execution's browser session."),
)

#: A number, or a template that renders one (`{{ steps.find.output.center.x + 10 }}`).
_COORD = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 20_000},
        {"type": "string", "pattern": "\\{\\{"},
    ]
}
_REGION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["x", "y", "width", "height"],
    "properties": {
        "x": _COORD,
        "y": _COORD,
        "width": {"type": "integer", "minimum": 1},
        "height": {"type": "integer", "minimum": 1},
    },
}
_BUTTON = {"enum": ["left", "right", "middle"]}
_IMAGE = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "sha256 of an artifact"}
_SCALES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min": {"type": "number", "minimum": 0.1, "maximum": 1},
        "max": {"type": "number", "minimum": 1, "maximum": 5},
        "step": {"type": "number", "minimum": 0.01, "maximum": 1},
    },
}
_MATCH = {
    "image": _IMAGE,
    "threshold": {"type": "number", "minimum": 0.1, "maximum": 1},
    "scales": _SCALES,
    "region": _REGION,
}
_OCR = {
    "region": _REGION,
    "psm": {"type": "integer", "minimum": 3, "maximum": 13},
    "min_confidence": {"type": "number", "minimum": 0, "maximum": 100},
}
_WINDOW = {"title": _NON_EMPTY, "regex": {"type": "boolean"}}


def _d(kind: str, description: str, required: tuple[str, ...] = (), **properties: Any) -> NodeType:
    return NodeType(f"desktop.{kind}", "desktop", description, properties, required, "desktop")


DESKTOP_TYPES = (
    _d("click", "Click at a point of the screen.", ("x", "y"), x=_COORD, y=_COORD, button=_BUTTON),
    _d("double_click", "Double-click at a point.", ("x", "y"), x=_COORD, y=_COORD),
    _d("right_click", "Right-click at a point.", ("x", "y"), x=_COORD, y=_COORD),
    _d(
        "move_to",
        "Move the pointer to a point.",
        ("x", "y"),
        x=_COORD,
        y=_COORD,
        duration_s={"type": "number", "minimum": 0, "maximum": 10},
    ),
    _d(
        "drag_to",
        "Drag from a point (default: the pointer) to another.",
        ("x", "y"),
        x=_COORD,
        y=_COORD,
        from_x=_COORD,
        from_y=_COORD,
        button=_BUTTON,
        duration_s={"type": "number", "minimum": 0, "maximum": 10},
    ),
    _d(
        "scroll",
        "Turn the mouse wheel (positive: up), at a point when given.",
        ("clicks",),
        clicks={"type": "integer", "minimum": -100, "maximum": 100},
        x=_COORD,
        y=_COORD,
    ),
    _d(
        "type_text",
        "Type text key by key into what has the focus: `text`, or a credential's secret.",
        (),
        text={"type": "string", "minLength": 1, "maxLength": 10_000},
        credential=_STR,
        field=_STR,
        interval_s={"type": "number", "minimum": 0, "maximum": 1},
    ),
    _d(
        "press_key",
        "Press a key (enter, tab, f5, …) one or more times.",
        ("key",),
        key=_NON_EMPTY,
        presses={"type": "integer", "minimum": 1, "maximum": 100},
    ),
    _d(
        "hotkey",
        "Press keys together (ctrl, shift, s).",
        ("keys",),
        keys={"type": "array", "items": _NON_EMPTY, "minItems": 1, "maxItems": 5},
    ),
    _d("screenshot", "A PNG of the screen or a region, as an artifact.", region=_REGION),
    _d(
        "locate_image",
        "Find an image on the screen at any scale in a range (OpenCV).",
        ("image",),
        **_MATCH,
    ),
    _d(
        "click_image",
        "Find an image and click its centre (wait: until it shows).",
        ("image",),
        **_MATCH,
        button=_BUTTON,
        wait={"type": "boolean"},
    ),
    _d("wait_for_image", "Wait until an image shows on the screen.", ("image",), **_MATCH),
    _d(
        "read_text",
        "Read the text of the screen or a region (Tesseract), word by word.",
        (),
        **_OCR,
    ),
    _d(
        "click_text",
        "Find words on the screen by OCR and click their centre.",
        ("text",),
        text=_NON_EMPTY,
        occurrence={"type": "integer", "minimum": 1, "maximum": 100},
        button=_BUTTON,
        wait={"type": "boolean"},
        **_OCR,
    ),
    _d("wait_for_text", "Wait until words show on the screen.", ("text",), text=_NON_EMPTY, **_OCR),
    _d(
        "launch_app",
        "Start a program on the display (and wait for its window).",
        ("command",),
        command={"oneOf": [_NON_EMPTY, {"type": "array", "items": _STR, "minItems": 1}]},
        wait_for_window=_STR,
    ),
    _d(
        "list_windows",
        "The windows on the display (title, box, pid).",
        title=_STR,
        all={"type": "boolean"},
    ),
    _d(
        "focus_window",
        "Bring a window to the front and give it the keyboard.",
        ("title",),
        **_WINDOW,
    ),
    _d("close_window", "Ask a window to close.", ("title",), **_WINDOW),
    _d("clipboard_get", "The text on the clipboard."),
    _d("clipboard_set", "Put text on the clipboard.", ("text",), text=_STR),
)

NODE_TYPES: dict[str, NodeType] = {
    t.type: t
    for t in (
        _t(
            "trigger.manual",
            "Start by hand or through startExecution.",
            inputs_schema={"type": "object"},
            max_concurrency=_CONCURRENCY,
        ),
        _t(
            "trigger.cron",
            "Start on a cron schedule in a time zone.",
            ("expression",),
            expression=_STR,
            timezone={"type": "string", "default": "UTC"},
            max_concurrency=_CONCURRENCY,
        ),
        _t(
            "trigger.webhook",
            "Start on POST /hooks/{workspace}/{path}; answers with the execution id. With a "
            "credential (http_header: that header must carry its value; http_bearer: "
            "Authorization: Bearer <token>) other callers are refused.",
            ("path",),
            path={"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            credential=_STR,
            max_concurrency=_CONCURRENCY,
        ),
        _t(
            "control.if",
            "Branch on a condition: edges labelled true / false.",
            ("condition",),
            condition=_TEMPLATE,
        ),
        _t(
            "control.switch",
            "Branch on a value: edges labelled with a case, or default.",
            ("value", "cases"),
            value=_TEMPLATE,
            # "error" labels the edge taken when the node fails: no case may use it.
            cases={
                "type": "array",
                "items": {"type": "string", "not": {"const": "error"}},
                "minItems": 1,
                "uniqueItems": True,
            },
        ),
        _t(
            "control.loop",
            "Run the body for each item of a list, a few at a time: the body is the nodes "
            "reached through edges labelled `body` (or that lead back to the loop); "
            "other outgoing edges run after every item, with the list of results.",
            ("items",),
            items=_TEMPLATE,
            concurrency={"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
            body_workflow_id=_STR,
        ),
        _t(
            "control.merge",
            "Wait for all (or any) incoming branches.",
            mode={"enum": ["all", "any"], "default": "all"},
        ),
        _t(
            "control.delay",
            "Wait a number of seconds, or until a time.",
            seconds={"type": "number", "minimum": 0},
            until={
                "anyOf": [_TEMPLATE, {"type": "number", "minimum": 0, "maximum": LATEST_UNTIL}],
                "description": "ISO 8601 time (UTC without a zone) or epoch seconds",
            },
        ),
        _t(
            "control.subworkflow",
            "Run another workflow and wait for its outputs.",
            ("workflow_id",),
            workflow_id=_STR,
            version={"type": "integer", "minimum": 1},
            inputs={"type": "object"},
        ),
        _t(
            "control.stop",
            "End the execution: succeed, or fail with a message.",
            outcome={"enum": ["succeed", "fail"], "default": "succeed"},
            message=_TEMPLATE,
            output={"description": "the execution's output (templates allowed)"},
        ),
        _t(
            "http.request",
            "Call an HTTP API; a JSON body is parsed.",
            ("url",),
            method={"enum": _METHODS, "default": "GET"},
            url=_TEMPLATE,
            headers={"type": "object", "additionalProperties": _STR},
            query={"type": "object", "additionalProperties": _STR},
            body={},
            auth={
                "type": "object",
                "additionalProperties": False,
                "properties": {"credential": _STR},
                "required": ["credential"],
            },
        ),
        _t(
            "sql.query",
            "Run a parameterised query on PostgreSQL through a workspace credential: the "
            "query is fixed SQL with %s placeholders, the values (templates allowed) go in "
            "parameters.",
            ("credential", "query"),
            credential=_STR,
            query=_STR,
            parameters={"type": "array"},
        ),
        _t(
            "data.transform",
            "Build an object from templates (the orchestrator completes it as it renders it).",
            fields={"type": "object", "additionalProperties": {}},
        ),
        _t(
            "data.filter",
            "Keep the items of a list for which a condition holds.",
            ("items", "condition"),
            items=_TEMPLATE,
            condition=_TEMPLATE,
        ),
        _t(
            "file.read",
            "Read CSV, JSON or text from the artifact store.",
            ("path",),
            path=_TEMPLATE,
            format=_FORMATS,
        ),
        _t(
            "file.write",
            "Write CSV, JSON or text to the artifact store.",
            ("path", "content"),
            path=_TEMPLATE,
            format=_FORMATS,
            content={},
        ),
        _t(
            "ai.llm",
            "Ask a language model (any OpenAI-compatible endpoint).",
            ("prompt",),
            prompt=_TEMPLATE,
            system=_TEMPLATE,
            model=_STR,
            temperature={"type": "number", "minimum": 0, "maximum": 2},
            json_output={"type": "boolean"},
            credential=_STR,
        ),
        _t(
            "ai.extract",
            "Extract fields described in plain words from text, as JSON.",
            ("text", "fields"),
            text=_TEMPLATE,
            fields={"type": "object", "additionalProperties": _STR, "minProperties": 1},
            model=_STR,
            credential=_STR,
        ),
        *BROWSER_TYPES,
        *DESKTOP_TYPES,
    )
}
#: Pools whose runners keep a session between an execution's steps (closed when it ends).
SESSION_POOLS = frozenset({"browser", "desktop"})


@cache
def _validator(node_type: str, complete: bool) -> Draft202012Validator:
    schema = NODE_TYPES[node_type].schema
    if not complete:
        schema = {**schema, "required": []}
    return Draft202012Validator(schema)


def config_errors(node_type: str, config: dict[str, Any], complete: bool = True) -> list[str]:
    """What is wrong with a config of `node_type`, one message per problem."""
    if node_type not in NODE_TYPES:
        return [f"unknown node type {node_type!r}"]
    messages = []
    for error in sorted(_validator(node_type, complete).iter_errors(config), key=str):
        where = ".".join(str(p) for p in error.absolute_path)
        messages.append(f"{where}: {error.message}" if where else error.message)
    return messages + template_errors(config) + _meaning_errors(node_type, config, complete)


def _meaning_errors(node_type: str, config: dict[str, Any], complete: bool) -> list[str]:
    """What a schema cannot say: a cron expression that parses, a time zone that exists."""
    errors = []
    auth = config.get("auth")
    names = [config.get("credential"), auth.get("credential") if isinstance(auth, dict) else None]
    for name in names:
        if isinstance(name, str) and is_template(name):
            errors.append(
                "credential: must name a credential, not a template (the inputs of an "
                "execution must not choose which secret a step gets)"
            )
    if node_type == "sql.query" and is_template(config.get("query")):
        errors.append(
            "query: must be fixed SQL, not a template (a value rendered into the statement is "
            "SQL injection); put %s placeholders in the query and the values, templates "
            "allowed, in parameters"
        )
    typed = {"browser.fill": "value", "desktop.type_text": "text"}.get(node_type)
    if typed and typed in config and "credential" in config:
        errors.append(f"{typed}: give {typed} or credential (the secret to type), not both")
    elif typed and complete and typed not in config and "credential" not in config:
        errors.append(f"{typed}: required (or credential, to type a secret)")
    if node_type == "trigger.cron":
        expression = config.get("expression")
        if isinstance(expression, str) and not croniter.is_valid(expression):
            errors.append(f"expression: {expression!r} is not a cron expression")
        elif isinstance(expression, str) and never_fires(expression):
            errors.append(f"expression: {expression!r} never fires (no such date)")
        zone = config.get("timezone")
        if isinstance(zone, str):
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                errors.append(f"timezone: {zone!r} is not a time zone")
    return errors


def never_fires(expression: str) -> bool:
    """Whether a well-formed cron expression names no date that exists (`0 0 30 2 *`)."""
    try:
        croniter(expression).get_next(float)
    except ValueError:  # croniter's CroniterBadDateError: it searched and found none
        return True
    return False


def check_config(node_type: str, config: dict[str, Any]) -> None:
    """VALIDATION unless the type is known and the config has the right shape (it may still
    lack required keys: a draft is edited a field at a time)."""
    if node_type not in NODE_TYPES:
        known = ", ".join(sorted(NODE_TYPES))
        raise ValidationFailed(f"unknown node type {node_type!r}; known: {known}", field="type")
    error = best_match(_validator(node_type, complete=False).iter_errors(config))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise ValidationFailed(
            f"config of {node_type} is invalid{' at ' + where if where else ''}: {error.message}",
            field="config",
        )
    problems = template_errors(config) + _meaning_errors(node_type, config, complete=False)
    if problems:
        raise ValidationFailed(f"config of {node_type} is invalid: {problems[0]}", field="config")
