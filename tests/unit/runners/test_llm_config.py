"""ai.* steps with no model endpoint configured anywhere fail at once, saying what to set."""

from __future__ import annotations

import pytest

from tests.unit.runners.stepping import StepRunner


@pytest.mark.parametrize("node_type", ["ai.llm", "ai.extract"])
def test_without_an_endpoint_or_a_key_a_step_says_what_to_set(
    steps: StepRunner, node_type: str
) -> None:
    config = {"prompt": "hi", "text": "Ann is 31", "fields": {"age": "age in years"}}
    error = steps.with_settings(llm_base_url=None, llm_api_key=None).fails(node_type, config)
    assert error.type == "ConfigError" and not error.retryable
    assert "AUTOOPS_LLM_BASE_URL" in str(error) and "AUTOOPS_LLM_API_KEY" in str(error)
