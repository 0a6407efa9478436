"""Step executors: what each runner-side node type does with its rendered config.

Synchronous (the runner calls them from a thread pool); each returns JSON data or raises
StepError, and stops early when `StepContext.cancelled` is set.
"""

from runners.nodes.context import StepContext
from runners.nodes.dispatch import EXECUTORS, run_step
from runners.nodes.errors import StepError

__all__ = ["EXECUTORS", "StepContext", "StepError", "run_step"]
