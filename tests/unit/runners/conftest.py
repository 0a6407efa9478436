from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.runners.stepping import StepRunner


@pytest.fixture
def steps(tmp_path: Path) -> StepRunner:
    return StepRunner.at(tmp_path)
