"""Placements of the vLLM family (vLLM, SGLang, MindIE), of vox-box and custom on one device, and on CPU.

One GPU -> several GPUs of one worker (tensor parallel dividing the attention heads) ->
several workers over Ray (``schedule.ray``). The first level that yields candidates wins; a
scorer then picks among them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.observe import ResourceClaim, Worker
from reconciler.schedule.capacity import Capacity, gib
from reconciler.schedule.placement import Placement, Subordinate
from reconciler.schedule.ray import ray_candidates, ray_shortfall
from reconciler.schedule.request import GPUShare, Outcome, Request, fewest_gpus, per_gpu, usable_gpu
from reconciler.schedule.scorers import preferred_gpu


@dataclass(frozen=True)
class _Share:
    """One replica being placed: what every level reads, and how it builds a placement."""

    request: Request
    share: GPUShare
    capacity: Capacity

    def place(
        self,
        worker: str,
        gpus: Sequence[int],
        strategy: str,
        tp: int = 1,
        pp: int = 1,
        subordinates: tuple[Subordinate, ...] = (),
    ) -> Placement:
        request, share, capacity, gmu = self.request, self.share, self.capacity, self.share.gmu
        single = len(gpus) == 1 and not subordinates
        vram = {i: per_gpu(capacity, worker, i, gmu, share.estimate, single) for i in gpus}
        ram = 0 if share.kv_ram_ratio is None else share.ram(sum(vram.values()))
        claim = ResourceClaim.model_construct(ram=ram, vram=vram)
        return Placement(
            request.backend,
            worker,
            tuple(gpus),
            claim,
            strategy,
            tensor_parallel=tp,
            pipeline_parallel=pp,
            gpu_memory_utilization=gmu if gmu > 0 else None,
            subordinates=subordinates,
        )

    def single(self, worker: str, index: int, vram: int) -> Placement:
        """``place`` on one GPU whose claim is known already (``vram``): no sums again."""
        share = self.share
        ram = 0 if share.kv_ram_ratio is None else share.ram(vram)
        claim = ResourceClaim.model_construct(ram=ram, vram={index: vram})
        gmu = share.gmu if share.gmu > 0 else None
        return Placement(self.request.backend, worker, (index,), claim, "single-gpu", gpu_memory_utilization=gmu)

    def usable(self, worker: Worker) -> list[int]:
        """The worker's GPUs that meet the VRAM utilization ratio."""
        gpus = self.request.gpus(self.capacity, worker)
        return [i for i in gpus if usable_gpu(self.capacity, worker.name, i, self.share.gmu)]


def share_candidates(request: Request, share: GPUShare, capacity: Capacity) -> Outcome:
    s = _Share(request, share, capacity)
    outcome = Outcome()
    fixed = request.gpus_per_replica
    largest = capacity.largest_gpu * share.gmu if share.gmu > 0 else capacity.largest_free
    if fixed in (None, 1) and share.estimate <= largest:
        outcome.candidates = _single_gpu(s)
        if outcome.candidates:
            return outcome
    if fixed != 1 and request.backend not in ("vox-box",) and _several_gpus(s, outcome):
        return outcome
    outcome.notes.insert(0, _share_shortfall(request, share, capacity, s.usable))
    return outcome


def _single_gpu(s: _Share) -> list[Placement]:
    """One GPU per worker that has the room, the scorer's choice among its GPUs."""
    request, share, capacity, gmu = s.request, s.share, s.capacity, s.share.gmu
    found: list[Placement] = []
    free = capacity.vram_free
    manual = request.manual_gpus
    for worker in request.workers:
        name = worker.name
        most = capacity.most_free(name)
        if most < share.estimate or most < capacity.smallest_gpu.get(name, 0) * gmu:
            continue  # no GPU of this worker has the room
        room = capacity.ram_allocatable(name)
        if share.kv_ram_ratio is None and room < 0:
            continue
        options = []
        for index, total in capacity.gpu_totals[name]:
            if manual is not None and (name, index) not in manual:
                continue
            allocatable = free[(name, index)]
            if gmu > 0:
                if allocatable < total * gmu:  # the VRAM utilization ratio
                    continue
                per = int(total * gmu)
            else:
                per = share.estimate
            if share.estimate <= per <= allocatable and (share.kv_ram_ratio is None or share.ram(per) <= room):
                options.append((index, per))
        if options:
            options.sort(key=lambda o: (-free[(name, o[0])], o[0]))
            ram = 0 if share.kv_ram_ratio is None else share.ram(options[0][1])
            index = preferred_gpu(options, ram, capacity, name, request.model, request.placement)
            found.append(s.single(name, index, dict(options)[index]))
            if request.enough(found):
                break
    return found


def _several_gpus(s: _Share, outcome: Outcome) -> bool:
    """Several GPUs of one worker (TP dividing the heads), then vLLM over Ray; True when found."""
    request, share, capacity, gmu, fixed = s.request, s.share, s.capacity, s.share.gmu, s.request.gpus_per_replica
    divisibility: list[tuple[int, str]] = []  # (GPU count, why): the smallest count decided it
    for worker in request.workers:
        gpus = s.usable(worker)
        for count in [fixed] if fixed else range(2, len(gpus) + 1):
            if count is None or count < 2 or count > len(gpus):
                continue
            chosen = gpus[:count]
            total = sum(per_gpu(capacity, worker.name, i, gmu, share.estimate, False) for i in chosen)
            if total < share.estimate:
                continue
            if share.heads and share.heads % count:
                divisibility.append(
                    (
                        count,
                        f"Total number of attention heads ({share.heads}) must be divisible by "
                        f"tensor parallel size ({count}).",
                    )
                )
                continue
            if share.ram(total) <= capacity.ram_allocatable(worker.name):
                outcome.candidates.append(s.place(worker.name, chosen, "multi-gpu", tp=count))
            break
        if request.enough(outcome.candidates):
            break
    if outcome.candidates:
        outcome.candidates = fewest_gpus(outcome.candidates)
        return True
    if divisibility:
        outcome.notes.append(min(divisibility)[1])
    if request.distributed and request.backend == "vllm":
        outcome.candidates = ray_candidates(request, share, capacity, s.usable, s.place)
        if outcome.candidates:
            outcome.notes.clear()
            return True
        if len(request.workers) > 1:
            outcome.notes.append(ray_shortfall(request, share, capacity, s.usable))
    return False


def _share_shortfall(
    request: Request, share: GPUShare, capacity: Capacity, usable: Callable[[Worker], list[int]]
) -> str:
    text = f"the model requires approximately {gib(share.estimate)} GiB VRAM"
    gpu_workers = [w for w in request.workers if request.gpus(capacity, w)]
    if not gpu_workers:
        return text + f"; none of the {len(request.workers)} workers that passed the filters has a GPU"
    # The most allocatable VRAM; between equals, the first name.
    best = min(
        gpu_workers,
        key=lambda w: (-sum(max(capacity.vram_allocatable(w.name, i), 0) for i in request.gpus(capacity, w)), w.name),
    )
    gpus = request.gpus(capacity, best)
    allocatable = sum(max(capacity.vram_allocatable(best.name, i), 0) for i in gpus)
    good = usable(best)
    text += f"; the largest available worker ({best.name}) has {gib(allocatable)} GiB allocatable VRAM"
    if share.gmu > 0:
        providing = sum(per_gpu(capacity, best.name, i, share.gmu, share.estimate, False) for i in good)
        text += (
            f", {len(good)}/{len(gpus)} of its GPUs meet the VRAM utilization ratio ({share.gmu:g}), "
            f"providing {gib(providing)} GiB"
        )
        held = [i for i in gpus if i not in good and capacity.holders.get((best.name, i))]
        for index in sorted(held):
            names = ", ".join(capacity.holders[(best.name, index)])
            text += f"; GPU {index} misses the ratio because {names} holds memory on it"
    return text


def cpu_candidates(request: Request, ram: int, capacity: Capacity) -> Outcome:
    outcome = Outcome()
    claim = ResourceClaim(ram=ram)
    for worker in request.workers:
        if capacity.fits(worker.name, claim):
            outcome.candidates.append(Placement(request.backend, worker.name, (), claim, "cpu"))
            if request.enough(outcome.candidates):
                break
    if not outcome.candidates:
        best = max(request.workers, key=lambda w: capacity.ram_allocatable(w.name), default=None)
        where = (
            f"the largest worker ({best.name}) has {gib(capacity.ram_allocatable(best.name))} GiB allocatable RAM"
            if best
            else "no worker passed the filters"
        )
        outcome.notes.append(f"the model requires approximately {gib(ram)} GiB RAM; {where}")
    return outcome
