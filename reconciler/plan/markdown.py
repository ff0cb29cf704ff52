"""A Plan as Markdown, for a pull-request comment: every value a manifest or an agent chose is data.

The comment is read by people on GitHub, and a manifest in the pull request chooses model
names, parameters and reasons' contents. So every such value is an inline code span whose
fence is longer than any run of backticks in it (no newline, table pipes escaped), and the
command lines are one fenced block whose fence is longer than any run in them: nothing a
value holds becomes a heading, a mention, a link, an image or HTML.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from reconciler.plan.model import Plan
from reconciler.plan.output import SYMBOLS, claim_text, layout_text, summary_line

_TICKS = re.compile(r"`+")


def _longest_run(text: str) -> int:
    return max((len(run) for run in _TICKS.findall(text)), default=0)


def code(value: str, cell: bool = True) -> str:
    """``value`` as literal inline code; ``cell``: inside a table row, where a pipe ends the cell."""
    text = value.replace("\r", " ").replace("\n", " ")
    if cell:
        text = text.replace("|", "\\|")
    fence = "`" * (_longest_run(text) + 1)
    return f"{fence} {text} {fence}"  # the spaces let a value start or end with a backtick


def fenced(lines: Sequence[str]) -> list[str]:
    """A fenced code block that no line of ``lines`` can close."""
    fence = "`" * max(3, _longest_run("\n".join(lines)) + 1)
    return [fence, *lines, fence]


def to_markdown(plan: Plan) -> str:
    title = f"### reconcile plan {code(plan.revision, cell=False)}" if plan.revision else "### reconcile plan"
    lines = [title, "", f"**{summary_line(plan)}**", ""]
    if plan.has_changes:
        lines += ["| | instance | worker | GPUs | how | claim | reason |", "|---|---|---|---|---|---|---|"]
        for action in plan.changes:
            spec = action.instance
            gpus = ",".join(map(str, spec.gpus)) or "-"
            lines.append(
                f"| `{SYMBOLS[action.action]}` {action.action} | {code(spec.id)} | {code(action.worker)} | {gpus} | "
                f"{code(layout_text(action))} | {claim_text(action)} | {code(action.reason)} |"
            )
        commands = [a for a in plan.changes if a.action != "delete"]
        if commands:
            body = [
                line for a in commands for line in (f"# {a.instance.id} on {a.worker}", shlex.join(a.instance.argv))
            ]
            lines += ["", "<details><summary>Command lines</summary>", "", *fenced(body), "", "</details>"]
    else:
        lines.append(f"No changes. {plan.count('keep')} instances up to date.")
    if plan.rollouts:
        lines += ["", "| rollout | step | state | message |", "|---|---|---|---|"]
        lines += [f"| {code(r.model)} | {code(r.summary())} | {r.state} | {code(r.message)} |" for r in plan.rollouts]
    if plan.pending:
        lines += ["", "| pending | replica | reason |", "|---|---|---|"]
        lines += [f"| {code(p.model)} | {p.replica} | {code(p.reason)} |" for p in plan.pending]
    return "\n".join(lines) + "\n"
