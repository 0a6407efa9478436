"""Projections: SQL folds of the public events into the `read` schema, applied exactly once
by the faust projector and rebuilt from the event store by replay."""

from projections.applier import Applier, Change, ensure_read_models
from projections.registry import PROJECTIONS, Projection
from projections.replay import ReplaySummary, rebuild

__all__ = [
    "PROJECTIONS",
    "Applier",
    "Change",
    "Projection",
    "ReplaySummary",
    "ensure_read_models",
    "rebuild",
]
