from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm_server import LlmServer, running_llm_server
from tests.unit.runners.stepping import StepRunner


@pytest.fixture
def steps(tmp_path: Path) -> StepRunner:
    return StepRunner.at(tmp_path)


@pytest.fixture
def llm_server() -> Iterator[LlmServer]:
    """A local OpenAI-compatible endpoint (its `base_url` ends in /v1)."""
    with running_llm_server() as server:
        yield server


@pytest.fixture
def llm_base_url(llm_server: LlmServer) -> str:
    return llm_server.base_url
