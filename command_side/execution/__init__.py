"""The execution context: how a workflow runs (the orchestrator's pure decisions first)."""

from command_side.execution.aggregate import Execution
from command_side.execution.decide import (
    Edge,
    Finish,
    Plan,
    RetryPolicy,
    Schedule,
    Skip,
    Step,
    decide,
    retry_policy,
)

__all__ = [
    "Edge",
    "Execution",
    "Finish",
    "Plan",
    "RetryPolicy",
    "Schedule",
    "Skip",
    "Step",
    "decide",
    "retry_policy",
]
