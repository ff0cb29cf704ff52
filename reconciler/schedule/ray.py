"""vLLM over Ray: workers with equal GPU counts, TP = GPUs per worker, PP = workers."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.observe import ResourceClaim, Worker
from reconciler.schedule.capacity import Capacity, gib
from reconciler.schedule.placement import Placement, Subordinate
from reconciler.schedule.request import GPUShare, Request, per_gpu


def ray_candidates(
    request: Request,
    share: GPUShare,
    capacity: Capacity,
    usable: Callable[[Worker], list[int]],
    place: Callable[..., Placement],
) -> list[Placement]:
    """Workers with equal GPU counts: TP = GPUs per worker, PP = workers (vLLM over Ray)."""
    groups: dict[int, list[Worker]] = {}
    for worker in request.workers:
        count = len(usable(worker))
        if count and count == len(request.gpus(capacity, worker)):
            groups.setdefault(count, []).append(worker)
    found = []
    for per_worker, members in sorted(groups.items(), reverse=True):
        if len(members) < 2 or (share.heads and share.heads % per_worker):
            continue
        if request.gpus_per_replica is not None and request.gpus_per_replica % per_worker:
            continue
        members.sort(key=lambda w: w.name)
        for count in range(2, len(members) + 1):
            chosen = members[:count]
            if request.gpus_per_replica is not None and count * per_worker != request.gpus_per_replica:
                continue
            total = sum(
                per_gpu(capacity, w.name, i, share.gmu, share.estimate, False) for w in chosen for i in usable(w)
            )
            if total >= share.estimate:
                main, rest = chosen[0], chosen[1:]
                subordinates = []
                for w in rest:
                    vram = {i: per_gpu(capacity, w.name, i, share.gmu, share.estimate, False) for i in usable(w)}
                    claim = ResourceClaim(ram=share.ram(sum(vram.values())), vram=vram)
                    subordinates.append(Subordinate(w.name, tuple(usable(w)), claim, "ray-worker"))
                main_vram = sum(per_gpu(capacity, main.name, i, share.gmu, share.estimate, False) for i in usable(main))
                if share.ram(main_vram) > capacity.ram_allocatable(main.name) or any(
                    s.claim.ram > capacity.ram_allocatable(s.worker) for s in subordinates
                ):
                    continue
                found.append(
                    place(main.name, usable(main), "ray", tp=per_worker, pp=count, subordinates=tuple(subordinates))
                )
                break
    return found


def ray_shortfall(request: Request, share: GPUShare, capacity: Capacity, usable: Callable[[Worker], list[int]]) -> str:
    """The Ray combination that came closest: all workers with the same number of usable GPUs."""
    groups: dict[int, list[Worker]] = {}
    for worker in request.workers:
        count = len(usable(worker))
        if count and count == len(request.gpus(capacity, worker)):
            groups.setdefault(count, []).append(worker)
    best: tuple[int, list[str]] | None = None
    for members in groups.values():
        if len(members) < 2:
            continue
        provided = sum(
            per_gpu(capacity, w.name, i, share.gmu, share.estimate, False) for w in members for i in usable(w)
        )
        if best is None or provided > best[0]:
            best = (provided, sorted(w.name for w in members))
    if best is None:
        return "over Ray: no two workers have the same number of GPUs, each meeting the ratio"
    return f"over Ray, workers {', '.join(best[1])} together provide {gib(best[0])} GiB"
