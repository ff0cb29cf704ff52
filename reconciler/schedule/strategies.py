"""Candidate placements per backend family, tried in GPUStack's order.

llama.cpp family (GGUF): one GPU -> several GPUs of one worker -> several workers
over RPC -> partial offload -> CPU only. vLLM family: one GPU -> several GPUs of one
worker (tensor parallel dividing the attention heads) -> several workers over Ray.
The first level that yields candidates wins; a scorer then picks among them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reconciler.estimate.claims import RAM_FOOTPRINT, GGUFClaim, extended_kv_ram, gguf_claim
from reconciler.observe import GGUFFacts, ResourceClaim, Worker
from reconciler.schedule.capacity import Capacity, gib
from reconciler.schedule.placement import Placement, Subordinate
from reconciler.schedule.scorers import preferred_gpu

MAX_RPC_SERVERS = 8


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


# --- llama.cpp family ----------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFShape:
    facts: GGUFFacts
    context: int
    parallel: int
    python_server: bool
    host_bytes: int = 0

    def claim(self, offload: int, split: Sequence[float] = (1.0,)) -> GGUFClaim:
        return gguf_claim(
            self.facts,
            context=self.context,
            parallel=self.parallel,
            offload=offload,
            split=split or (1.0,),
            python_server=self.python_server,
            host_bytes=self.host_bytes,
        )


def _gguf_claim(shape: GGUFShape, gpus: Sequence[int], offload: int, split: Sequence[float]) -> ResourceClaim:
    claim = shape.claim(offload, split)
    return ResourceClaim(ram=claim.ram, vram=dict(zip(gpus, claim.vram, strict=False)))


def _split(capacity: Capacity, worker: str, gpus: Sequence[int]) -> list[float]:
    return [max(capacity.vram_allocatable(worker, i), 1) for i in gpus]


def _mib_split(claim: ResourceClaim, gpus: Sequence[int]) -> tuple[int, ...]:
    return tuple(claim.vram[i] // (1024 * 1024) for i in gpus)


def gguf_candidates(request: Request, shape: GGUFShape, capacity: Capacity) -> Outcome:
    full = shape.facts.block_count + 1
    fixed = request.gpus_per_replica
    outcome = Outcome()

    def placement(
        worker: str,
        gpus: Sequence[int],
        offload: int,
        strategy: str,
        claim: ResourceClaim,
        subordinates: tuple[Subordinate, ...] = (),
    ) -> Placement:
        split = _mib_split(claim, gpus) if len(gpus) > 1 else ()
        return Placement(
            request.backend,
            worker,
            tuple(gpus),
            claim,
            strategy,
            offload_layers=offload,
            tensor_split=split,
            subordinates=subordinates,
        )

    levels: list[tuple[str, Callable[[], list[Placement]]]] = []

    def single_gpu() -> list[Placement]:
        found: list[Placement] = []
        whole = shape.claim(full)
        vram = whole.vram[0]
        if vram > capacity.largest_free:
            return found
        for worker in request.workers:
            if capacity.max_free.get(worker.name, -1) < vram or whole.ram > capacity.ram_allocatable(worker.name):
                continue
            options = [
                (i, vram)
                for i in request.gpus(capacity, worker)
                if vram <= capacity.vram_allocatable(worker.name, i)
                and not (capacity.gpu(worker.name, i) or (0, False))[1]
            ]
            if options:
                index = preferred_gpu(options, whole.ram, capacity, worker.name, request.model, request.placement)
                claim = ResourceClaim.model_construct(ram=whole.ram, vram={index: vram})
                found.append(placement(worker.name, [index], full, "single-gpu", claim))
                if request.enough(found):
                    break
        if not found:  # unified-memory devices take VRAM from RAM too: check them one by one
            for worker in request.workers:
                for index in request.gpus(capacity, worker):
                    claim = ResourceClaim(ram=whole.ram, vram={index: vram})
                    if (capacity.gpu(worker.name, index) or (0, False))[1] and capacity.fits(worker.name, claim):
                        found.append(placement(worker.name, [index], full, "single-gpu", claim))
        return found

    def multi_gpu() -> list[Placement]:
        found = []
        for worker in request.workers:
            gpus = request.gpus(capacity, worker)
            counts = [fixed] if fixed else range(2, len(gpus) + 1)
            for count in counts:
                if count < 2 or count > len(gpus):
                    continue
                chosen = gpus[:count]
                claim = _gguf_claim(shape, chosen, full, _split(capacity, worker.name, chosen))
                if capacity.fits(worker.name, claim):
                    found.append(placement(worker.name, chosen, full, "multi-gpu", claim))
                    break
            if request.enough(found):
                break
        return fewest_gpus(found)

    def rpc() -> list[Placement]:
        found = []
        for main in request.workers:
            remote = [(w.name, i) for w in request.workers if w.name != main.name for i in request.gpus(capacity, w)]
            remote.sort(key=lambda g: (-capacity.vram_allocatable(*g), g))
            local = [(main.name, i) for i in request.gpus(capacity, main)]
            for count in range(1, min(len(remote), MAX_RPC_SERVERS) + 1):
                devices = remote[:count] + local  # llama.cpp lists RPC devices first
                split = [max(capacity.vram_allocatable(*d), 1) for d in devices]
                claim = shape.claim(full, split)
                per_device = dict(zip(devices, claim.vram, strict=True))
                main_claim = ResourceClaim(ram=claim.ram, vram={i: per_device[(main.name, i)] for _, i in local})
                subordinates = tuple(
                    Subordinate(w, (i,), ResourceClaim(ram=RAM_FOOTPRINT, vram={i: per_device[(w, i)]}), "rpc-server")
                    for w, i in remote[:count]
                )
                if capacity.fits(main.name, main_claim) and all(capacity.fits(s.worker, s.claim) for s in subordinates):
                    split_mib = tuple(v // (1024 * 1024) for v in claim.vram)
                    found.append(
                        Placement(
                            request.backend,
                            main.name,
                            tuple(i for _, i in local),
                            main_claim,
                            "rpc",
                            offload_layers=full,
                            tensor_split=split_mib,
                            subordinates=subordinates,
                        )
                    )
                    break
        if not found:
            outcome.notes.append(_rpc_shortfall(request, shape, capacity))
        return found

    def partial() -> list[Placement]:
        found: list[Placement] = []
        for worker in request.workers:
            gpus = request.gpus(capacity, worker)
            sets = [gpus[:1]] + ([gpus] if len(gpus) > 1 else [])
            for chosen in sets:
                if not chosen:
                    continue
                split = _split(capacity, worker.name, chosen)
                low, high = 0, full - 1
                while low < high:  # the most layers that still fit
                    middle = (low + high + 1) // 2
                    if capacity.fits(worker.name, _gguf_claim(shape, chosen, middle, split)):
                        low = middle
                    else:
                        high = middle - 1
                if low > 0:
                    found.append(
                        placement(worker.name, chosen, low, "partial-offload", _gguf_claim(shape, chosen, low, split))
                    )
        most = max((p.offload_layers or 0 for p in found), default=0)
        return fewest_gpus([p for p in found if p.offload_layers == most])

    def cpu() -> list[Placement]:
        found = []
        for worker in request.workers:
            claim = _gguf_claim(shape, [], 0, ())
            if capacity.fits(worker.name, claim):
                found.append(placement(worker.name, [], 0, "cpu", claim))
                if request.enough(found):
                    break
        return found

    if fixed in (None, 1):
        levels.append(("single-gpu", single_gpu))
    if fixed != 1:
        levels.append(("multi-gpu", multi_gpu))
    if request.distributed and request.backend == "llama-box" and request.manual_gpus is None:
        levels.append(("rpc", rpc))
    if request.cpu_offloading:
        levels.append(("partial-offload", partial))
        if request.manual_gpus is None and fixed is None:
            levels.append(("cpu", cpu))
    for _, level in levels:
        outcome.candidates = level()
        if outcome.candidates:
            outcome.notes.clear()
            return outcome
    outcome.notes.insert(0, _gguf_shortfall(request, shape, capacity))
    return outcome


def _rpc_shortfall(request: Request, shape: GGUFShape, capacity: Capacity) -> str:
    """The multi-worker combination that came closest: a main worker plus up to 8 RPC GPUs."""
    best: tuple[int, list[str], int] | None = None
    everywhere = [(w.name, i) for w in request.workers for i in request.gpus(capacity, w)]
    everywhere.sort(key=lambda g: (-capacity.vram_allocatable(*g), g))  # sorted once, not per main worker
    for main in request.workers:
        local = [(main.name, i) for i in request.gpus(capacity, main)]
        head = everywhere[: MAX_RPC_SERVERS + len(local)]  # enough even if all the main's GPUs rank first
        devices = [g for g in head if g[0] != main.name][:MAX_RPC_SERVERS] + local
        if len({name for name, _ in devices}) < 2:
            continue
        provided = sum(max(capacity.vram_allocatable(*d), 0) for d in devices)
        if best is None or provided > best[0]:
            split = [max(capacity.vram_allocatable(*d), 1) for d in devices]
            names = [main.name, *sorted({name for name, _ in devices} - {main.name})]
            best = (provided, names, shape.claim(shape.facts.block_count + 1, split).vram_total)
    if best is None:
        return "over RPC: fewer than two workers with GPUs passed the filters"
    provided, names, needed = best
    return (
        f"over RPC, workers {', '.join(names)} together provide {gib(provided)} GiB allocatable VRAM "
        f"of the {gib(needed)} GiB needed split that way"
    )


def _gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


def _gguf_shortfall(request: Request, shape: GGUFShape, capacity: Capacity) -> str:
    full = shape.facts.block_count + 1
    gpu_claim = shape.claim(full)
    cpu_claim = shape.claim(0)
    if not request.workers:
        return "no worker passed the filters"
    best = min(  # the most allocatable VRAM, then RAM; between equals, the first name
        request.workers,
        key=lambda w: (
            -sum(max(capacity.vram_allocatable(w.name, i), 0) for i in request.gpus(capacity, w)),
            -capacity.ram_allocatable(w.name),
            w.name,
        ),
    )
    vram = sum(max(capacity.vram_allocatable(best.name, i), 0) for i in request.gpus(capacity, best))
    text = (
        f"the model requires approximately {gib(gpu_claim.vram_total)} GiB VRAM and {gib(gpu_claim.ram)} GiB RAM "
        f"fully offloaded"
    )
    if request.cpu_offloading:
        text += f", or {gib(cpu_claim.ram)} GiB RAM on CPU"
    text += (
        f"; the largest worker ({best.name}) has {gib(vram)} GiB allocatable VRAM over "
        f"{_gpus(len(request.gpus(capacity, best)))} and {gib(capacity.ram_allocatable(best.name))} GiB "
        f"allocatable RAM"
    )
    if not request.cpu_offloading:
        text += "; cpuOffloading is off, so every layer must be on a GPU"
    return text


# --- vLLM family (vLLM, SGLang, MindIE; vox-box and custom on one device) ---------------------


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


def _usable(capacity: Capacity, worker: str, index: int, gmu: float) -> bool:
    total = capacity.vram_total(worker, index)
    return total > 0 and (gmu <= 0 or capacity.vram_allocatable(worker, index) / total >= gmu)


def _per_gpu(capacity: Capacity, worker: str, index: int, gmu: float, estimate: int, single: bool) -> int:
    if gmu > 0:
        return int(capacity.vram_total(worker, index) * gmu)
    return estimate if single else max(capacity.vram_allocatable(worker, index), 0)


def share_candidates(request: Request, share: GPUShare, capacity: Capacity) -> Outcome:
    outcome = Outcome()
    fixed = request.gpus_per_replica
    gmu = share.gmu

    def place(
        worker: str,
        gpus: Sequence[int],
        strategy: str,
        tp: int = 1,
        pp: int = 1,
        subordinates: tuple[Subordinate, ...] = (),
    ) -> Placement:
        single = len(gpus) == 1 and not subordinates
        vram = {i: _per_gpu(capacity, worker, i, gmu, share.estimate, single) for i in gpus}
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

    def usable(worker: Worker) -> list[int]:
        return [i for i in request.gpus(capacity, worker) if _usable(capacity, worker.name, i, gmu)]

    largest = capacity.largest_gpu * gmu if gmu > 0 else capacity.largest_free
    if fixed in (None, 1) and share.estimate <= largest:
        free = capacity.vram_free
        manual = request.manual_gpus
        for worker in request.workers:
            name = worker.name
            most = capacity.max_free.get(name, -1)
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
                outcome.candidates.append(place(name, [index], "single-gpu"))
                if request.enough(outcome.candidates):
                    break
        if outcome.candidates:
            return outcome
    if fixed != 1 and request.backend not in ("vox-box",):
        divisibility: list[tuple[int, str]] = []  # (GPU count, why): the smallest count decided it
        for worker in request.workers:
            gpus = usable(worker)
            for count in [fixed] if fixed else range(2, len(gpus) + 1):
                if count is None or count < 2 or count > len(gpus):
                    continue
                chosen = gpus[:count]
                total = sum(_per_gpu(capacity, worker.name, i, gmu, share.estimate, False) for i in chosen)
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
                    outcome.candidates.append(place(worker.name, chosen, "multi-gpu", tp=count))
                break
            if request.enough(outcome.candidates):
                break
        if outcome.candidates:
            outcome.candidates = fewest_gpus(outcome.candidates)
            return outcome
        if divisibility:
            outcome.notes.append(min(divisibility)[1])
        if request.distributed and request.backend == "vllm":
            outcome.candidates = _ray_candidates(request, share, capacity, usable, place)
            if outcome.candidates:
                outcome.notes.clear()
                return outcome
            if len(request.workers) > 1:
                outcome.notes.append(_ray_shortfall(request, share, capacity, usable))
    outcome.notes.insert(0, _share_shortfall(request, share, capacity, usable))
    return outcome


def _ray_candidates(
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
                _per_gpu(capacity, w.name, i, share.gmu, share.estimate, False) for w in chosen for i in usable(w)
            )
            if total >= share.estimate:
                main, rest = chosen[0], chosen[1:]
                subordinates = []
                for w in rest:
                    vram = {i: _per_gpu(capacity, w.name, i, share.gmu, share.estimate, False) for i in usable(w)}
                    claim = ResourceClaim(ram=share.ram(sum(vram.values())), vram=vram)
                    subordinates.append(Subordinate(w.name, tuple(usable(w)), claim, "ray-worker"))
                main_vram = sum(
                    _per_gpu(capacity, main.name, i, share.gmu, share.estimate, False) for i in usable(main)
                )
                if share.ram(main_vram) > capacity.ram_allocatable(main.name) or any(
                    s.claim.ram > capacity.ram_allocatable(s.worker) for s in subordinates
                ):
                    continue
                found.append(
                    place(main.name, usable(main), "ray", tp=per_worker, pp=count, subordinates=tuple(subordinates))
                )
                break
    return found


def _ray_shortfall(request: Request, share: GPUShare, capacity: Capacity, usable: Callable[[Worker], list[int]]) -> str:
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
            _per_gpu(capacity, w.name, i, share.gmu, share.estimate, False) for w in members for i in usable(w)
        )
        if best is None or provided > best[0]:
            best = (provided, sorted(w.name for w in members))
    if best is None:
        return "over Ray: no two workers have the same number of GPUs, each meeting the ratio"
    return f"over Ray, workers {', '.join(best[1])} together provide {gib(best[0])} GiB"


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
        providing = sum(_per_gpu(capacity, best.name, i, share.gmu, share.estimate, False) for i in good)
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
