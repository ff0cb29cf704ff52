"""What every placement strategy shares: the replica to place, what a level found, and per-GPU sums.

The strategies themselves: ``schedule.gguf`` (llama.cpp family), ``schedule.share`` (vLLM
family, vox-box and custom on one device, CPU only) and ``schedule.ray`` (vLLM over several
workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.estimate.claims import extended_kv_ram
from reconciler.observe import Worker
from reconciler.schedule.capacity import Capacity
from reconciler.schedule.placement import Placement


@dataclass(frozen=True)
class Request:
    """One replica to place: its model, backend and the workers that passed the filters."""

    model: str
    backend: str
    category: str
    workers: tuple[Worker, ...]
    manual_gpus: frozenset[tuple[str, int]] | None = None
    gpus_per_replica: int | None = None
    cpu_offloading: bool = True
    distributed: bool = False
    placement: str = "spread"
    limit: int | None = None  # stop a level after this many candidate workers (large clusters)

    def enough(self, found: Sequence[object]) -> bool:
        return self.limit is not None and len(found) >= self.limit

    def gpus(self, capacity: Capacity, worker: Worker) -> list[int]:
        """The worker's GPUs this request may use, most allocatable first."""
        free = capacity.vram_free
        name = worker.name
        indexes = [g.index for g in worker.gpus if self.manual_gpus is None or (name, g.index) in self.manual_gpus]
        return sorted(indexes, key=lambda i: (-free[(name, i)], i))


@dataclass
class Outcome:
    candidates: list[Placement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fewest_gpus(candidates: list[Placement]) -> list[Placement]:
    """Only the candidates using the fewest GPUs across all workers, as GPUStack keeps them.

    Scoring comes after, so a 3-GPU placement never beats a 2-GPU one: the spare GPU
    stays free for the next model.
    """
    fewest = min((len(c.gpus) for c in candidates), default=0)
    return [c for c in candidates if len(c.gpus) == fewest]


@dataclass(frozen=True)
class GPUShare:
    estimate: int
    gmu: float
    heads: int
    kv_ram_ratio: float | None = None  # extendedKVCache: LMCache's CPU cache in RAM
    kv_max_ram: int | None = None

    def ram(self, vram: int) -> int:
        """RAM one process holds besides what the backend needs anyway: its LMCache CPU cache."""
        return 0 if self.kv_ram_ratio is None else extended_kv_ram(vram, self.kv_ram_ratio, self.kv_max_ram)


def usable_gpu(capacity: Capacity, worker: str, index: int, gmu: float) -> bool:
    total = capacity.vram_total(worker, index)
    return total > 0 and (gmu <= 0 or capacity.vram_allocatable(worker, index) / total >= gmu)


def per_gpu(capacity: Capacity, worker: str, index: int, gmu: float, estimate: int, single: bool) -> int:
    if gmu > 0:
        return int(capacity.vram_total(worker, index) * gmu)
    return estimate if single else max(capacity.vram_allocatable(worker, index), 0)
