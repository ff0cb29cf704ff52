"""Stage 7: the plan. Diff desired against observed -> create / replace / delete / keep."""

from reconciler.plan.model import Action, Layout, PendingReplica, Plan, Rollout
from reconciler.plan.output import to_data, to_json, to_markdown, to_text
from reconciler.plan.planner import Facts, model_hash, plan
from reconciler.plan.step import step, widen

__all__ = [
    "Action",
    "Facts",
    "Layout",
    "PendingReplica",
    "Plan",
    "Rollout",
    "model_hash",
    "plan",
    "step",
    "to_data",
    "to_json",
    "to_markdown",
    "to_text",
    "widen",
]
