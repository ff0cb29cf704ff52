"""The Plan: frozen data, in a deterministic order, with a reason on every action."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from reconciler.observe import InstanceSpec, ObservedInstance

ActionKind = Literal["create", "replace", "delete", "keep"]
_ORDER = {"delete": 0, "replace": 1, "create": 2, "keep": 3}


@dataclass(frozen=True)
class Layout:
    """How the scheduler split a replica; known for what this plan places, not for what it keeps."""

    strategy: str  # single-gpu, multi-gpu, rpc, ray, partial-offload, cpu
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    offload_layers: int | None = None  # GGUF: layers on GPUs, of total_layers (the output layer counts)
    total_layers: int | None = None


@dataclass(frozen=True)
class Action:
    action: ActionKind
    worker: str
    instance: InstanceSpec
    reason: str
    layout: Layout | None = None
    surge: bool = False  # a replica beyond spec.replicas that serves while old ones are replaced


@dataclass(frozen=True)
class Rollout:
    """One model's rollout at this step: ``step`` of ``of`` steps, counted from what runs now."""

    model: str
    state: str  # "Progressing" or "Stalled"
    message: str
    step: int = 1
    of: int = 1
    surge: int = 0  # new replicas beside the old ones in this step
    replace: int = 0  # old replicas replaced in this step
    keep: int = 0  # old replicas that keep running in this step

    def summary(self) -> str:
        """``step 1 of 4: surge 1 new, keep 3 old``."""
        parts = [f"surge {self.surge} new"] if self.surge else []
        parts += [f"replace {self.replace}"] if self.replace else []
        parts += [f"keep {self.keep} old"] if self.keep else []
        return f"step {self.step} of {self.of}: {', '.join(parts) or 'wait'}"


@dataclass(frozen=True)
class PendingReplica:
    model: str
    replica: int
    reason: str


@dataclass(frozen=True)
class Plan:
    revision: str
    actions: tuple[Action, ...]
    pending: tuple[PendingReplica, ...]
    rollouts: tuple[Rollout, ...] = ()

    @classmethod
    def build(
        cls,
        revision: str,
        actions: Iterable[Action],
        pending: Iterable[PendingReplica],
        rollouts: Iterable[Rollout] = (),
    ) -> Plan:
        ordered = sorted(
            actions, key=lambda a: (a.instance.model, a.instance.replica, a.instance.id, a.worker, _ORDER[a.action])
        )
        return cls(
            revision,
            tuple(ordered),
            tuple(sorted(pending, key=lambda p: (p.model, p.replica))),
            tuple(sorted(rollouts, key=lambda r: r.model)),
        )

    def count(self, kind: ActionKind) -> int:
        return sum(1 for a in self.actions if a.action == kind)

    @property
    def changes(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.action != "keep")

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def desired_sets(self) -> dict[str, list[InstanceSpec]]:
        """The full set each agent must run after this plan: what it creates, replaces and keeps."""
        sets: dict[str, list[InstanceSpec]] = {}
        for action in self.actions:
            sets.setdefault(action.worker, [])
            if action.action != "delete":
                instance = action.instance
                sets[action.worker].append(instance.spec() if isinstance(instance, ObservedInstance) else instance)
        return sets
