"""Which workers may run a model, and for those that may not, why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.observe import Worker
from reconciler.spec import Model, WorkerSelector
from reconciler.spec.models import MatchExpression

# The executable names an agent reports for each backend.
BACKEND_NAMES = {
    "llama-box": ("llama-box",),
    "llama-cpp": ("llama-cpp", "llama-server"),
    "vllm": ("vllm",),
    "sglang": ("sglang",),
    "vox-box": ("vox-box",),
    "mindie": ("mindie",),
}
LINUX_ONLY = ("vllm", "sglang", "mindie")


@dataclass(frozen=True)
class Filtered:
    passed: tuple[Worker, ...]
    rejected: tuple[tuple[str, str], ...]  # (worker, why)

    def summary(self) -> str:
        reasons = "; ".join(f"{name}: {why}" for name, why in self.rejected)
        return f"{len(self.passed)}/{len(self.passed) + len(self.rejected)} workers passed the filters ({reasons})"


def _expression_matches(expression: MatchExpression, labels: Mapping[str, str]) -> bool:
    value = labels.get(expression.key)
    if expression.operator == "In":
        return value in expression.values
    if expression.operator == "NotIn":
        return value not in expression.values
    if expression.operator == "Exists":
        return value is not None
    return value is None


def label_mismatch(
    worker: Worker, model: Model, selector: WorkerSelector | None, extra_labels: Mapping[str, str]
) -> str | None:
    labels = {**worker.all_labels(), **extra_labels}
    wanted = dict(model.spec.scheduling.match_labels)
    expressions: list[MatchExpression] = []
    if selector is not None:
        wanted = {**selector.spec.match_labels, **wanted}
        expressions = list(selector.spec.match_expressions)
    for key, value in sorted(wanted.items()):
        if labels.get(key) != value:
            return f"label {key}={value} not matched (has {labels.get(key, 'none')})"
    for expression in expressions:
        if not _expression_matches(expression, labels):
            values = ",".join(expression.values)
            name = selector.metadata.name if selector else ""
            return f"selector {name}: {expression.key} {expression.operator} [{values}] not matched"
    return None


def has_backend(worker: Worker, backend: str) -> bool:
    """A worker that reports no backends may install any (as GPUStack's workers do)."""
    if not worker.backends or backend == "custom":
        return True
    return any(worker.backend(name) is not None for name in BACKEND_NAMES.get(backend, (backend,)))


def filter_workers(
    workers: Sequence[Worker],
    model: Model,
    backend: str,
    selector: WorkerSelector | None,
    agent_labels: Mapping[str, Mapping[str, str]],
    file_holders: frozenset[str] | None,
) -> Filtered:
    """READY, labels and selector, backend installed, Linux for vLLM-family, the local file present."""
    passed: list[Worker] = []
    rejected: list[tuple[str, str]] = []
    for worker in workers:
        why: str | None = None
        if worker.state != "Ready":
            why = f"worker is {worker.state}"
        else:
            why = label_mismatch(worker, model, selector, agent_labels.get(worker.name, {}))
        if why is None and not has_backend(worker, backend):
            why = f"backend {backend} is not installed"
        if why is None and backend in LINUX_ONLY and worker.os != "linux":
            why = f"{backend} runs on Linux only (worker is {worker.os})"
        if why is None and file_holders is not None and worker.name not in file_holders:
            why = f"{model.spec.source.local_path} is not on this worker"
        if why is None:
            passed.append(worker)
        else:
            rejected.append((worker.name, why))
    return Filtered(tuple(passed), tuple(rejected))
