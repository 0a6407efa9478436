"""ai.llm and ai.extract against a local OpenAI-compatible server (tests/llm_server.py)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.llm_server import LlmServer
from tests.unit.runners.stepping import StepRunner


@pytest.fixture
def ai(steps: StepRunner, llm_base_url: str) -> StepRunner:
    return steps.with_settings(llm_base_url=llm_base_url, llm_model="test-model")


def test_a_prompt_gets_the_model_answer_with_usage(ai: StepRunner, llm_server: LlmServer) -> None:
    output = ai.run(
        "ai.llm", {"prompt": "Say hi to Ann", "system": "Be brief.", "temperature": 0.2}
    )
    assert output == {
        "text": "echo: Say hi to Ann",
        "json": None,
        "model": "test-model",
        "usage": {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11},
    }
    (request,) = llm_server.requests
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi to Ann"},
    ]
    assert (request["model"], request["temperature"]) == ("test-model", 0.2)
    assert "response_format" not in request


def test_json_output_asks_for_json_mode_and_parses_the_answer(
    ai: StepRunner, llm_server: LlmServer
) -> None:
    llm_server.reply('{"sentiment": "positive", "score": 0.9}')
    output = ai.run("ai.llm", {"prompt": "Rate: great product", "json_output": True})
    assert output["json"] == {"sentiment": "positive", "score": 0.9}
    request = llm_server.requests[0]
    assert request["response_format"] == {"type": "json_object"}
    assert "json" in json.dumps(request["messages"]).lower()  # JSON mode requires the word


def test_an_answer_that_is_not_json_is_a_retryable_llm_error(
    ai: StepRunner, llm_server: LlmServer
) -> None:
    llm_server.reply("Sure! Here it is: {")
    error = ai.fails("ai.llm", {"prompt": "json please", "json_output": True})
    assert (error.type, error.message, error.retryable) == (
        "LlmError",
        "model did not answer JSON",
        True,
    )


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True)])
def test_server_errors_and_rate_limits_are_retryable(
    ai: StepRunner, llm_server: LlmServer, status: int, retryable: bool
) -> None:
    llm_server.fail(status)
    error = ai.fails("ai.llm", {"prompt": "hi"})
    assert (error.type, error.retryable) == ("LlmError", retryable)
    assert str(status) in error.message
    assert len(llm_server.requests) == 1  # the client itself never retries


@pytest.mark.parametrize("status", [400, 401, 404])
def test_request_errors_are_final(ai: StepRunner, llm_server: LlmServer, status: int) -> None:
    llm_server.fail(status)
    error = ai.fails("ai.llm", {"prompt": "hi"})
    assert (error.type, error.retryable) == ("LlmError", False)
    assert f"answered {status}" in error.message


def test_the_step_after_a_failure_succeeds(ai: StepRunner, llm_server: LlmServer) -> None:
    llm_server.fail(500, times=1)
    assert ai.fails("ai.llm", {"prompt": "hi"}).retryable
    assert ai.run("ai.llm", {"prompt": "hi"})["text"] == "echo: hi"


def test_a_credential_names_the_endpoint_and_key_and_the_key_is_redacted(
    steps: StepRunner, llm_server: LlmServer
) -> None:
    secrets = {
        "llm": {"kind": "openai", "api_key": "sk-test-key-1", "base_url": llm_server.base_url}
    }
    llm_server.reply("your key is sk-test-key-1")
    output = steps.run("ai.llm", {"prompt": "hi", "credential": "llm", "model": "m2"}, secrets)
    assert output["text"] == "your key is ***"
    assert output["model"] == "m2"
    assert llm_server.requests[0]["authorization"] == "Bearer sk-test-key-1"


def test_the_configured_key_is_used_without_a_credential(
    ai: StepRunner, llm_server: LlmServer
) -> None:
    keyed = ai.with_settings(llm_api_key="sk-from-settings")
    keyed.run("ai.llm", {"prompt": "hi"})
    assert llm_server.requests[0]["authorization"] == "Bearer sk-from-settings"


def test_an_unreachable_endpoint_is_a_retryable_llm_error(steps: StepRunner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = steps.with_settings(llm_base_url=f"http://127.0.0.1:{port}/v1")
    error = unreachable.fails("ai.llm", {"prompt": "hi"})
    assert (error.type, error.retryable) == ("LlmError", True)


def test_a_slow_endpoint_times_out_retryably(ai: StepRunner, llm_server: LlmServer) -> None:
    llm_server.hold()
    error = ai.fails("ai.llm", {"prompt": "hi", "timeout_s": 0.3})
    assert (error.type, error.retryable) == ("LlmError", True)
    assert "timed out" in error.message


def test_cancelling_stops_a_call_in_flight(ai: StepRunner, llm_server: LlmServer) -> None:
    llm_server.hold()
    ai.cancel_when(llm_server.arrived)
    started = time.monotonic()
    error = ai.fails("ai.llm", {"prompt": "hi"})
    assert error.type == "Cancelled"
    assert time.monotonic() - started < 10
    assert not llm_server.release.is_set()


def test_extract_returns_every_requested_field_and_only_those(
    ai: StepRunner, llm_server: LlmServer
) -> None:
    llm_server.reply(json.dumps({"name": "Ann Lee", "amount": 42.5, "unasked": "x"}))
    fields = {"name": "the customer's full name", "amount": "total in euros", "date": "due date"}
    output = ai.run("ai.extract", {"text": "Invoice for Ann Lee: 42.50 EUR", "fields": fields})
    assert output == {"name": "Ann Lee", "amount": 42.5, "date": None}
    request = llm_server.requests[0]
    assert request["response_format"] == {"type": "json_object"}
    prompt = json.dumps(request["messages"])
    for name, description in fields.items():
        assert name in prompt and description in prompt
    assert "Invoice for Ann Lee" in prompt


def test_extract_needs_a_json_object(ai: StepRunner, llm_server: LlmServer) -> None:
    llm_server.reply("[1, 2]")
    error = ai.fails("ai.extract", {"text": "t", "fields": {"a": "b"}})
    assert (error.type, error.retryable) == ("LlmError", True)


def test_extract_maps_endpoint_errors_like_llm(ai: StepRunner, llm_server: LlmServer) -> None:
    llm_server.fail(429)
    error = ai.fails("ai.extract", {"text": "t", "fields": {"a": "b"}})
    assert (error.type, error.retryable) == ("LlmError", True)
