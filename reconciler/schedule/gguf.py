"""Placements of the llama.cpp family (GGUF), tried in GPUStack's order.

One GPU -> several GPUs of one worker -> several workers over RPC -> partial offload ->
CPU only. The first level that yields candidates wins; a scorer then picks among them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.estimate.claims import RAM_FOOTPRINT, GGUFClaim, gguf_claim
from reconciler.observe import GGUFFacts, ResourceClaim
from reconciler.schedule.capacity import Capacity, gib
from reconciler.schedule.placement import Placement, Subordinate
from reconciler.schedule.request import Outcome, Request, fewest_gpus
from reconciler.schedule.scorers import preferred_gpu

MAX_RPC_SERVERS = 8


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


@dataclass(frozen=True)
class _GGUF:
    """One replica being placed: what every level reads."""

    request: Request
    shape: GGUFShape
    capacity: Capacity
    outcome: Outcome

    @property
    def full(self) -> int:
        return self.shape.facts.block_count + 1

    @property
    def fixed(self) -> int | None:
        return self.request.gpus_per_replica


def gguf_candidates(request: Request, shape: GGUFShape, capacity: Capacity) -> Outcome:
    """Candidates of the first level that yields any: one GPU, several GPUs of one worker, RPC,
    partial offload, CPU only."""
    outcome = Outcome()
    g = _GGUF(request, shape, capacity, outcome)
    fixed = request.gpus_per_replica
    levels: list[tuple[str, Callable[[_GGUF], list[Placement]]]] = []
    if fixed in (None, 1):
        levels.append(("single-gpu", _single_gpu))
    if fixed != 1:
        levels.append(("multi-gpu", _multi_gpu))
    if request.distributed and request.backend == "llama-box" and request.manual_gpus is None:
        levels.append(("rpc", _rpc))
    if request.cpu_offloading:
        levels.append(("partial-offload", _partial))
        if request.manual_gpus is None and fixed is None:
            levels.append(("cpu", _cpu))
    for _, level in levels:
        outcome.candidates = level(g)
        if outcome.candidates:
            outcome.notes.clear()
            return outcome
    outcome.notes.insert(0, _gguf_shortfall(request, shape, capacity))
    return outcome


def _placement(
    g: _GGUF,
    worker: str,
    gpus: Sequence[int],
    offload: int,
    strategy: str,
    claim: ResourceClaim,
    subordinates: tuple[Subordinate, ...] = (),
) -> Placement:
    split = _mib_split(claim, gpus) if len(gpus) > 1 else ()
    return Placement(
        g.request.backend,
        worker,
        tuple(gpus),
        claim,
        strategy,
        offload_layers=offload,
        tensor_split=split,
        subordinates=subordinates,
    )


levels: list[tuple[str, Callable[[], list[Placement]]]] = []


def _single_gpu(g: _GGUF) -> list[Placement]:
    request, shape, capacity, full = g.request, g.shape, g.capacity, g.full
    found: list[Placement] = []
    whole = shape.claim(full)
    vram = whole.vram[0]
    if vram > capacity.largest_free:
        return found
    for worker in request.workers:
        if capacity.most_free(worker.name) < vram or whole.ram > capacity.ram_allocatable(worker.name):
            continue
        options = [
            (i, vram)
            for i in request.gpus(capacity, worker)
            if vram <= capacity.vram_allocatable(worker.name, i) and not (capacity.gpu(worker.name, i) or (0, False))[1]
        ]
        if options:
            index = preferred_gpu(options, whole.ram, capacity, worker.name, request.model, request.placement)
            claim = ResourceClaim.model_construct(ram=whole.ram, vram={index: vram})
            found.append(_placement(g, worker.name, [index], full, "single-gpu", claim))
            if request.enough(found):
                break
    if not found:  # unified-memory devices take VRAM from RAM too: check them one by one
        for worker in request.workers:
            for index in request.gpus(capacity, worker):
                claim = ResourceClaim(ram=whole.ram, vram={index: vram})
                if (capacity.gpu(worker.name, index) or (0, False))[1] and capacity.fits(worker.name, claim):
                    found.append(_placement(g, worker.name, [index], full, "single-gpu", claim))
    return found


def _multi_gpu(g: _GGUF) -> list[Placement]:
    request, shape, capacity, full, fixed = g.request, g.shape, g.capacity, g.full, g.fixed
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
                found.append(_placement(g, worker.name, chosen, full, "multi-gpu", claim))
                break
        if request.enough(found):
            break
    return fewest_gpus(found)


def _rpc(g: _GGUF) -> list[Placement]:
    request, shape, capacity, full = g.request, g.shape, g.capacity, g.full
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
        g.outcome.notes.append(_rpc_shortfall(request, shape, capacity))
    return found


def _partial(g: _GGUF) -> list[Placement]:
    request, shape, capacity, full = g.request, g.shape, g.capacity, g.full
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
                    _placement(g, worker.name, chosen, low, "partial-offload", _gguf_claim(shape, chosen, low, split))
                )
    most = max((p.offload_layers or 0 for p in found), default=0)
    return fewest_gpus([p for p in found if p.offload_layers == most])


def _cpu(g: _GGUF) -> list[Placement]:
    request, shape, capacity = g.request, g.shape, g.capacity
    found = []
    for worker in request.workers:
        claim = _gguf_claim(shape, [], 0, ())
        if capacity.fits(worker.name, claim):
            found.append(_placement(g, worker.name, [], 0, "cpu", claim))
            if request.enough(found):
                break
    return found


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
