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

    @classmethod
    def build(cls, revision: str, actions: Iterable[Action], pending: Iterable[PendingReplica]) -> Plan:
        ordered = sorted(
            actions, key=lambda a: (a.instance.model, a.instance.replica, a.instance.id, a.worker, _ORDER[a.action])
        )
        return cls(revision, tuple(ordered), tuple(sorted(pending, key=lambda p: (p.model, p.replica))))

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
