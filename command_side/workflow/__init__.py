"""The workflow context: the Workflow aggregate, its commands and their handlers."""

from command_side.workflow import commands
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import CommandResult, Meta

__all__ = ["CommandResult", "Meta", "Workflow", "commands"]
