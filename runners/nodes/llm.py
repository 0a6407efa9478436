"""`ai.llm` (ask a model) and `ai.extract` (fields described in plain words, as JSON), on any
OpenAI-compatible chat-completions endpoint."""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from runners.nodes.context import StepContext
from runners.nodes.errors import StepError
from runners.nodes.watch import SocketAborter, Watch, watch

_JSON_HINT = "Answer with a single JSON object and nothing else."


def ai_llm(config: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    json_output = bool(config.get("json_output"))
    system = config.get("system")
    prompt = str(config.get("prompt", ""))
    if json_output and "json" not in f"{system or ''} {prompt}".lower():
        system = f"{system}\n\n{_JSON_HINT}" if system else _JSON_HINT  # JSON mode needs it
    messages: list[ChatCompletionMessageParam] = []
    if system:
        messages.append({"role": "system", "content": str(system)})
    messages.append({"role": "user", "content": prompt})
    completion = _complete(config, ctx, messages, json_output)
    text = _text(completion)
    return {
        "text": text,
        "json": _json(text) if json_output else None,
        "model": completion.model,
        "usage": _usage(completion),
    }


def ai_extract(config: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    fields: dict[str, Any] = config.get("fields") or {}
    if not isinstance(fields, dict) or not fields:
        raise StepError("ConfigError", "fields must name at least one field")
    keys = ", ".join(json.dumps(name) for name in fields)
    described = "\n".join(f"- {name}: {description}" for name, description in fields.items())
    messages: list[ChatCompletionMessageParam] = [
        {
            "role": "system",
            "content": "You extract information from text. Answer with one JSON object that has "
            f"exactly these keys: {keys}. Give each the value the text states (text, number, "
            "boolean, list or object, as fits); use null when the text does not say.",
        },
        {"role": "user", "content": f"Keys:\n{described}\n\nText:\n{config.get('text', '')}"},
    ]
    answer = _json(_text(_complete(config, ctx, messages, json_output=True)))
    if not isinstance(answer, dict):
        raise StepError("LlmError", "model did not answer a JSON object", retryable=True)
    return {name: answer.get(name) for name in fields}


def _complete(
    config: dict[str, Any],
    ctx: StepContext,
    messages: list[ChatCompletionMessageParam],
    json_output: bool,
) -> ChatCompletion:
    seconds = ctx.time_left(config)
    name = config.get("credential")
    secret = ctx.credential(name, "openai") if name else {}
    base_url = secret.get("base_url") or ctx.settings.llm_base_url
    api_key = secret.get("api_key") or ctx.settings.llm_api_key
    if not base_url and not api_key:
        # Neither an endpoint nor a key: OpenAI's own endpoint would only refuse it.
        raise StepError(
            "ConfigError",
            "no model endpoint: set AUTOOPS_LLM_BASE_URL (any OpenAI-compatible server) or "
            "AUTOOPS_LLM_API_KEY (OpenAI's), or name an openai credential in the step",
        )
    aborter = SocketAborter()
    client = openai.OpenAI(
        base_url=base_url,
        # Local endpoints (Ollama, vLLM) want no key, but the client insists on one.
        api_key=api_key or "no-key",
        timeout=seconds,
        max_retries=0,  # the orchestrator retries, with backoff and attempts it records
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [aborter.on_request]}),
    )
    temperature = config.get("temperature")
    with client, watch(ctx.cancelled, aborter.abort, seconds=seconds) as watching:
        try:
            return client.chat.completions.create(
                model=config.get("model") or ctx.settings.llm_model,
                messages=messages,
                temperature=openai.omit if temperature is None else float(temperature),
                response_format={"type": "json_object"} if json_output else openai.omit,
            )
        except openai.OpenAIError as exc:
            raise _llm_error(exc, watching, ctx) from None


def _llm_error(exc: openai.OpenAIError, watching: Watch, ctx: StepContext) -> StepError:
    if watching.reason == "cancelled" or ctx.cancelled.is_set():
        return StepError("Cancelled", "the step was cancelled")
    if watching.reason == "timeout" or isinstance(exc, openai.APITimeoutError):
        return StepError("LlmError", "the model endpoint timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        return StepError("LlmError", f"cannot reach the model endpoint: {exc}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return StepError(
            "LlmError",
            f"the model endpoint answered {status}: {exc.message}"[:500],
            retryable=status == 429 or status >= 500,
        )
    return StepError("LlmError", f"{type(exc).__name__}: {exc}"[:500])


def _text(completion: ChatCompletion) -> str:
    if not completion.choices:
        raise StepError("LlmError", "the model answered no choices", retryable=True)
    return completion.choices[0].message.content or ""


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise StepError("LlmError", "model did not answer JSON", retryable=True) from None


def _usage(completion: ChatCompletion) -> dict[str, int]:
    usage = completion.usage
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
