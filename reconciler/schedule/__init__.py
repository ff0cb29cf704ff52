"""Stage 5: scheduling. Filters, candidate strategies per backend, spread/binpack scorers."""

from reconciler.schedule.capacity import Capacity, gib
from reconciler.schedule.placement import Placement, Subordinate, Unschedulable
from reconciler.schedule.scheduler import ModelContext, param_value, resolve_backend, schedule_replica

__all__ = [
    "Capacity",
    "ModelContext",
    "Placement",
    "Subordinate",
    "Unschedulable",
    "gib",
    "param_value",
    "resolve_backend",
    "schedule_replica",
]
