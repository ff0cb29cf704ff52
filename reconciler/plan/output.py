"""A Plan as text (like ``terraform plan``), JSON (DESIGN.md's shape) or Markdown (a PR comment)."""

from __future__ import annotations

import json
import shlex
from typing import Any

from reconciler.observe import GIB
from reconciler.plan.model import Action, Plan, Rollout

SYMBOLS = {"create": "+", "replace": "~", "delete": "-", "keep": " "}


def _claim_text(action: Action) -> str:
    claim = action.instance.claim
    parts = [f"{claim.ram / GIB:.2f} GiB RAM"]
    parts += [f"{vram / GIB:.2f} GiB VRAM on GPU {index}" for index, vram in sorted(claim.vram.items())]
    return ", ".join(parts)


def layout_text(action: Action) -> str:
    """The strategy in short: ``multi-gpu TP2``, ``ray TP4 PP2``, ``partial-offload 52/81 layers``."""
    layout = action.layout
    role = "" if action.instance.role == "main" else f" ({action.instance.role})"
    if layout is None:
        return f"-{role}"
    parts = [layout.strategy]
    if layout.tensor_parallel > 1 or layout.pipeline_parallel > 1:
        parts.append(f"TP{layout.tensor_parallel}")
    if layout.pipeline_parallel > 1:
        parts.append(f"PP{layout.pipeline_parallel}")
    if layout.offload_layers is not None and layout.total_layers is not None:
        parts.append(f"{layout.offload_layers}/{layout.total_layers} layers")
    return " ".join(parts) + role


def summary_line(plan: Plan) -> str:
    return (
        f"Plan: {plan.count('create')} to create, {plan.count('replace')} to replace, {plan.count('delete')} to delete."
    )


def rollout_line(rollout: Rollout) -> str:
    """``Rollout web: step 1 of 4: surge 1 new, keep 3 old``."""
    state = "" if rollout.state == "Progressing" else f" ({rollout.state})"
    return f"Rollout {rollout.model}: {rollout.summary()}{state}"


def to_text(plan: Plan) -> str:
    lines = [f"reconcile plan{f' (revision {plan.revision})' if plan.revision else ''}", ""]
    for action in plan.changes:
        spec = action.instance
        gpus = f" GPUs {','.join(map(str, spec.gpus))}" if spec.gpus else ""
        lines.append(f"  {SYMBOLS[action.action]} {action.action} {spec.id} on {action.worker}{gpus}")
        lines.append(f"      reason: {action.reason}")
        if action.action != "delete":
            lines.append(f"      argv:   {shlex.join(spec.argv)}")
            if spec.env:
                lines.append(f"      env:    {' '.join(f'{k}={v}' for k, v in sorted(spec.env.items()))}")
            lines.append(f"      how:    {layout_text(action)}")
            lines.append(f"      port:   {spec.port}  health: {spec.health_path or 'tcp'}")
            lines.append(f"      claim:  {_claim_text(action)}")
        lines.append("")
    if not plan.has_changes:
        lines += [f"No changes. {plan.count('keep')} instances up to date.", ""]
    if plan.pending:
        lines.append("Pending:")
        for item in plan.pending:
            lines.append(f"  ! {item.model} replica {item.replica}: {item.reason}")
        lines.append("")
    if plan.rollouts:
        lines += [line for r in plan.rollouts for line in (rollout_line(r), f"  {r.message}")] + [""]
    lines.append(summary_line(plan) + (f" {len(plan.pending)} pending." if plan.pending else ""))
    return "\n".join(lines) + "\n"


def _action_data(a: Action, rollout: Rollout | None) -> dict[str, Any]:
    return {
        "action": a.action,
        "instance": a.instance.id,
        "model": a.instance.model,
        "worker": a.worker,
        "gpus": list(a.instance.gpus),
        "argv": list(a.instance.argv),
        "env": dict(a.instance.env),
        "port": a.instance.port,
        "claim": {
            "ram": a.instance.claim.ram,
            "vram": {str(i): v for i, v in sorted(a.instance.claim.vram.items())},
        },
        "reason": a.reason,
        "strategy": a.layout.strategy if a.layout else None,
        "tensorParallel": a.layout.tensor_parallel if a.layout else None,
        "pipelineParallel": a.layout.pipeline_parallel if a.layout else None,
        "offloadLayers": a.layout.offload_layers if a.layout else None,
        "totalLayers": a.layout.total_layers if a.layout else None,
        "role": a.instance.role,
        "modelHash": a.instance.model_hash,
        "specHash": a.instance.spec_hash,
        "surge": a.surge,
        "step": rollout.step if rollout else None,
        "of": rollout.of if rollout else None,
    }


def to_data(plan: Plan) -> dict[str, Any]:
    rollouts = {r.model: r for r in plan.rollouts}
    return {
        "revision": plan.revision,
        "summary": {
            "create": plan.count("create"),
            "replace": plan.count("replace"),
            "delete": plan.count("delete"),
            "keep": plan.count("keep"),
            "pending": len(plan.pending),
        },
        "actions": [_action_data(a, rollouts.get(a.instance.model)) for a in plan.actions],
        "rollouts": [
            {
                "model": r.model,
                "state": r.state,
                "step": r.step,
                "of": r.of,
                "summary": r.summary(),
                "message": r.message,
            }
            for r in plan.rollouts
        ],
        "pending": [{"model": p.model, "replica": p.replica, "reason": p.reason} for p in plan.pending],
    }


def to_json(plan: Plan) -> str:
    return json.dumps(to_data(plan), indent=2) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(plan: Plan) -> str:
    lines = [f"### reconcile plan{f' `{plan.revision}`' if plan.revision else ''}", "", f"**{summary_line(plan)}**", ""]
    if plan.has_changes:
        lines += ["| | instance | worker | GPUs | how | claim | reason |", "|---|---|---|---|---|---|---|"]
        for action in plan.changes:
            spec = action.instance
            lines.append(
                f"| `{SYMBOLS[action.action]}` {action.action} | `{spec.id}` | {action.worker} | "
                f"{','.join(map(str, spec.gpus)) or '-'} | {_cell(layout_text(action))} | {_claim_text(action)} | "
                f"{_cell(action.reason)} |"
            )
        commands = [a for a in plan.changes if a.action != "delete"]
        if commands:
            lines += ["", "<details><summary>Command lines</summary>", "", "```"]
            lines += [f"# {a.instance.id} on {a.worker}\n{shlex.join(a.instance.argv)}" for a in commands]
            lines += ["```", "", "</details>"]
    else:
        lines.append(f"No changes. {plan.count('keep')} instances up to date.")
    if plan.pending:
        lines += ["", "| pending | replica | reason |", "|---|---|---|"]
        lines += [f"| `{p.model}` | {p.replica} | {_cell(p.reason)} |" for p in plan.pending]
    return "\n".join(lines) + "\n"
