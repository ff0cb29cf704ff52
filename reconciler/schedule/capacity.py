"""Allocatable memory per worker and GPU while one plan is being made.

Allocatable = total - claims of placed instances - reserved. On unified-memory
devices a VRAM claim also comes out of RAM.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from reconciler.observe import GIB, ResourceClaim, Worker


def gib(value: float) -> str:
    return f"{value / GIB:.2f}"


class Capacity:
    """Mutable bookkeeping local to one ``plan()`` call; never shared between calls."""

    def __init__(
        self,
        workers: Iterable[Worker],
        reserved_ram: int,
        reserved_vram: int,
        overrides: Mapping[str, tuple[int | None, int | None]] | None = None,
    ) -> None:
        """``overrides`` maps a worker name to its own (RAM, VRAM) reservation; None keeps the cluster's."""
        self.workers = {w.name: w for w in workers}
        overrides = overrides or {}
        own = {name: overrides.get(name, (None, None)) for name in self.workers}
        self.reserved_ram = {name: reserved_ram if ram is None else ram for name, (ram, _) in own.items()}
        reserved_vram_of = {name: reserved_vram if vram is None else vram for name, (_, vram) in own.items()}
        self.devices = {
            (w.name, g.index): (g.memory_total, g.unified_memory) for w in self.workers.values() for g in w.gpus
        }
        self.vram_free = {
            (name, index): total - reserved_vram_of[name] for (name, index), (total, _) in self.devices.items()
        }
        self.largest_gpu = max((total for total, _ in self.devices.values()), default=0)
        # The most any one GPU can give before claims: a quick bound for single-GPU placements.
        self.largest_free = max(self.vram_free.values(), default=0)
        self.gpu_totals = {w.name: [(g.index, g.memory_total) for g in w.gpus] for w in self.workers.values()}
        # Per worker, the most VRAM one GPU can still give and the smallest GPU: lets a placement
        # skip a full worker without looking at its GPUs (most workers, late in a large plan).
        self._most_free: dict[str, int] = {}  # computed when asked, forgotten by ``take``
        self.smallest_gpu = {name: min((t for _, t in gpus), default=0) for name, gpus in self.gpu_totals.items()}
        self.ram_claimed: Counter[str] = Counter()
        self.vram_claimed: Counter[tuple[str, int]] = Counter()
        self.model_count: Counter[tuple[str, str]] = Counter()  # (worker, model) -> instances
        self.gpu_model_count: Counter[tuple[str, int, str]] = Counter()
        self.instance_count: Counter[str] = Counter()
        self.gpu_instance_count: Counter[tuple[str, int]] = Counter()
        self.holders: dict[tuple[str, int], list[str]] = {}  # instances holding VRAM per GPU, for reasons

    def most_free(self, worker: str) -> int:
        """The most VRAM one of the worker's GPUs can still give (-1 without GPUs)."""
        found = self._most_free.get(worker)
        if found is None:
            found = max((self.vram_free[(worker, i)] for i, _ in self.gpu_totals.get(worker, ())), default=-1)
            self._most_free[worker] = found
        return found

    def gpu(self, worker: str, index: int) -> tuple[int, bool] | None:
        return self.devices.get((worker, index))

    def ram_total(self, worker: str) -> int:
        return self.workers[worker].memory_total

    def ram_allocatable(self, worker: str) -> int:
        return self.workers[worker].memory_total - self.ram_claimed[worker] - self.reserved_ram[worker]

    def vram_total(self, worker: str, index: int) -> int:
        found = self.devices.get((worker, index))
        return found[0] if found else 0

    def vram_allocatable(self, worker: str, index: int) -> int:
        return self.vram_free.get((worker, index), 0)

    def fits(self, worker: str, claim: ResourceClaim) -> bool:
        ram = claim.ram + self._unified(worker, claim)
        if ram > self.ram_allocatable(worker):
            return False
        return all(
            self.gpu(worker, i) is not None and v <= self.vram_allocatable(worker, i) for i, v in claim.vram.items()
        )

    def _unified(self, worker: str, claim: ResourceClaim) -> int:
        return sum(v for i, v in claim.vram.items() if (self.gpu(worker, i) or (0, False))[1])

    def take(self, worker: str, claim: ResourceClaim, model: str, instance: str = "") -> None:
        self.ram_claimed[worker] += claim.ram + self._unified(worker, claim)
        for index, vram in claim.vram.items():
            if instance and vram:
                self.holders.setdefault((worker, index), []).append(instance)
            self.vram_claimed[(worker, index)] += vram
            if (worker, index) in self.vram_free:
                self.vram_free[(worker, index)] -= vram
            self.gpu_model_count[(worker, index, model)] += 1
            self.gpu_instance_count[(worker, index)] += 1
        self.model_count[(worker, model)] += 1
        self.instance_count[worker] += 1
        if claim.vram:
            self._most_free.pop(worker, None)
