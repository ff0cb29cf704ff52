"""Stage 5: scheduling. Filters, candidate strategies per backend, spread/binpack scorers."""

from reconciler.schedule.capacity import Capacity, gib
from reconciler.schedule.placement import Placement, Subordinate, Unschedulable
from reconciler.schedule.scheduler import ModelContext, Scheduler, param_value, resolve_backend

__all__ = [
    "Capacity",
    "ModelContext",
    "Placement",
    "Scheduler",
    "Subordinate",
    "Unschedulable",
    "gib",
    "param_value",
    "resolve_backend",
]
