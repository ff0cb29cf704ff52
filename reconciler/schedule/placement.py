"""What the scheduler decides for one replica: a placement, or why there is none."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.observe import HelperRole, ResourceClaim


@dataclass(frozen=True)
class Subordinate:
    """A helper process of a distributed replica on another worker (RPC server, Ray worker)."""

    worker: str
    gpus: tuple[int, ...]
    claim: ResourceClaim
    role: HelperRole


@dataclass(frozen=True)
class Placement:
    """Where one replica runs, what it holds, and how its backend must split the model."""

    backend: str
    worker: str
    gpus: tuple[int, ...]
    claim: ResourceClaim
    strategy: str
    offload_layers: int | None = None
    tensor_split: tuple[int, ...] = ()
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    gpu_memory_utilization: float | None = None
    subordinates: tuple[Subordinate, ...] = field(default=())


@dataclass(frozen=True)
class Unschedulable:
    """No placement: ``reason`` names the numbers (required GiB, best worker's GiB, ...)."""

    reason: str
