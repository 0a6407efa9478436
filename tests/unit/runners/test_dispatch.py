"""run_step: dispatch, the deadline, cancellation and redaction every step shares."""

from __future__ import annotations

import time

import pytest

from runners.nodes import EXECUTORS, StepError
from runners.nodes.context import StepContext
from tests.unit.runners.stepping import StepRunner, make_task

BEARER = {"api": {"kind": "http_bearer", "token": "tok-SECRET-1"}}


def test_an_unknown_node_type_is_refused(steps: StepRunner) -> None:
    error = steps.fails("control.if", {})
    assert (error.type, error.retryable) == ("UnknownNodeType", False)


def test_a_cancelled_step_does_not_start(steps: StepRunner) -> None:
    steps.cancelled.set()
    assert steps.fails("data.transform", {"fields": {}}).type == "Cancelled"


def test_a_step_past_its_deadline_does_not_start(steps: StepRunner) -> None:
    error = steps.fails("data.transform", {}, deadline=time.time() - 1)
    assert (error.type, error.retryable) == ("StepTimeout", True)


def test_secrets_are_redacted_from_outputs_keys_included(steps: StepRunner) -> None:
    fields = {"leak": "Bearer tok-SECRET-1", "tok-SECRET-1": ["x tok-SECRET-1 y"], "n": 1}
    output = steps.run("data.transform", {"fields": fields}, BEARER)
    assert output == {"leak": "Bearer ***", "***": ["x *** y"], "n": 1}


def test_secrets_are_redacted_from_error_messages(steps: StepRunner) -> None:
    config = {"items": [1], "condition": "{{ item.x['tok-SECRET-1'] }}"}
    error = steps.fails("data.filter", config, BEARER)
    assert error.type == "TemplateError"
    assert "tok-SECRET-1" not in error.message


def test_the_configured_llm_key_is_redacted_too(steps: StepRunner) -> None:
    keyed = steps.with_settings(llm_api_key="sk-configured-key")
    output = keyed.run("data.transform", {"fields": {"k": "sk-configured-key"}})
    assert output == {"k": "***"}


def test_an_unforeseen_failure_is_an_internal_error_without_secrets(
    steps: StepRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(config: dict[str, object], ctx: StepContext) -> object:
        raise RuntimeError("boom with tok-SECRET-1")

    monkeypatch.setitem(EXECUTORS, "data.transform", broken)
    error = steps.fails("data.transform", {}, BEARER)
    assert (error.type, error.message) == ("InternalError", "RuntimeError: boom with ***")
    assert error.__cause__ is None and error.__suppress_context__


def test_a_missing_credential_is_a_credential_error(steps: StepRunner) -> None:
    error = steps.fails("sql.query", {"credential": "db", "query": "select 1"}, BEARER)
    assert (error.type, error.retryable) == ("CredentialError", False)
    assert "'db' is not available" in error.message


def test_a_credential_of_the_wrong_kind_is_refused(steps: StepRunner) -> None:
    error = steps.fails("sql.query", {"credential": "api", "query": "select 1"}, BEARER)
    assert error.type == "CredentialError"
    assert "needs postgres" in error.message


def test_time_left_is_the_timeout_cut_short_by_the_deadline(steps: StepRunner) -> None:
    task = make_task("data.transform", {}, timeout_s=30.0, deadline=time.time() + 5)
    ctx = steps.context(task)
    assert 4 < ctx.time_left({}) <= 5
    assert ctx.time_left({"timeout_s": 2}) == 2
    ctx.task["deadline"] = time.time() - 1
    with pytest.raises(StepError) as info:
        ctx.time_left({})
    assert info.value.type == "StepTimeout"


def test_step_errors_describe_themselves_as_result_errors() -> None:
    error = StepError("SqlError", "no", retryable=True)
    assert error.as_dict() == {"type": "SqlError", "message": "no", "retryable": True}
    assert str(error) == "no"
