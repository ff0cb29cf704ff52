"""Place one replica: resolve the backend, filter workers, try the strategies, score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.estimate.claims import DEFAULT_GMU, vllm_estimate, vox_box_estimate
from reconciler.estimate.metadata import ModelMetadata
from reconciler.observe import GIB, Worker
from reconciler.schedule.capacity import Capacity
from reconciler.schedule.filters import Filtered, filter_workers, has_backend
from reconciler.schedule.placement import Placement, Unschedulable
from reconciler.schedule.scorers import best
from reconciler.schedule.strategies import (
    GGUFShape,
    GPUShare,
    Outcome,
    Request,
    cpu_candidates,
    gguf_candidates,
    share_candidates,
)
from reconciler.spec import BackendParameter, Cluster, Model, WorkerSelector, parse_backend_parameters

LLAMA_FAMILY = ("llama-box", "llama-cpp")
GPU_SHARE_FAMILY = ("vllm", "sglang", "mindie")
EXTENDED_KV_CACHE = ("vllm", "sglang")
# Defaults per backend when the manifest leaves them null (GPUStack's defaults).
CPU_OFFLOADING_DEFAULT = {"llama-box": True, "llama-cpp": True, "vox-box": True, "custom": True}
DISTRIBUTED_DEFAULT = {"llama-box": True, "vllm": True}
CONTEXT_FLAGS = {"llama-box": ("--ctx-size", "-c"), "llama-cpp": ("--n_ctx",)}
PARALLEL_FLAGS = ("--parallel", "-np")
GMU_FLAGS = {
    "vllm": ("--gpu-memory-utilization",),
    "sglang": ("--mem-fraction-static",),
    "mindie": ("--npu-memory-fraction",),
}


def param_value(params: Sequence[BackendParameter], *flags: str) -> str | None:
    """The last value the user gave for any of ``flags``."""
    found = None
    for param in params:
        if param.flag in flags:
            found = param.value if param.value is not None else ""
    return found


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


def resolve_backend(model: Model, metadata: ModelMetadata | None, workers: Sequence[Worker]) -> str:
    """``auto``: a GGUF goes to llama-box (llama-cpp where only that is installed), speech to vox-box, else vLLM."""
    if model.spec.backend != "auto":
        return model.spec.backend
    is_gguf = (metadata is not None and metadata.format == "gguf") or model.spec.source.is_gguf()
    if is_gguf:
        box = any(w.backend("llama-box") for w in workers)
        cpp = any(has_backend(w, "llama-cpp") and w.backends for w in workers)
        return "llama-cpp" if cpp and not box else "llama-box"
    category = model.spec.category or (metadata.category() if metadata else "llm")
    return "vox-box" if category in ("speech-to-text", "text-to-speech") else "vllm"


@dataclass(frozen=True)
class ModelContext:
    """Everything about one model that scheduling and rendering read, resolved once per plan."""

    model: Model
    backend: str
    category: str
    metadata: ModelMetadata | None
    metadata_error: str | None
    params: tuple[BackendParameter, ...]
    context: int
    parallel: int
    placement: str
    cpu_offloading: bool
    distributed: bool
    gmu: float

    @property
    def name(self) -> str:
        return self.model.metadata.name

    @classmethod
    def resolve(
        cls,
        model: Model,
        cluster: Cluster,
        metadata: ModelMetadata | None,
        metadata_error: str | None,
        workers: Sequence[Worker],
    ) -> ModelContext:
        spec = model.spec
        params = parse_backend_parameters(spec.backend_parameters)
        backend = resolve_backend(model, metadata, workers)
        category = spec.category or (metadata.category() if metadata else "llm")
        defaults = cluster.spec.defaults
        context = int(_number(param_value(params, *CONTEXT_FLAGS.get(backend, ())), defaults.context_size))
        parallel_default = 1 if category in ("embedding", "reranker") else defaults.parallel
        parallel = int(_number(param_value(params, *PARALLEL_FLAGS), parallel_default))
        gmu_default = DEFAULT_GMU if category == "llm" else 0.0
        gmu = _number(param_value(params, *GMU_FLAGS.get(backend, ())), gmu_default)
        return cls(
            model=model,
            backend=backend,
            category=category,
            metadata=metadata,
            metadata_error=metadata_error,
            params=params,
            context=context,
            parallel=parallel,
            placement=spec.scheduling.placement or defaults.placement,
            cpu_offloading=spec.cpu_offloading
            if spec.cpu_offloading is not None
            else CPU_OFFLOADING_DEFAULT.get(backend, False),
            distributed=spec.distributed_inference
            if spec.distributed_inference is not None
            else DISTRIBUTED_DEFAULT.get(backend, False),
            gmu=gmu,
        )


def _manual_gpus(model: Model) -> frozenset[tuple[str, int]] | None:
    entries = model.spec.scheduling.gpu_selector
    if not entries:
        return None
    return frozenset((worker, int(index)) for worker, index in (e.rsplit(":", 1) for e in entries))


SCORE_ALL_UP_TO = 64
WINDOW = 8


class Scheduler:
    """Places replicas one after another into one plan's capacity.

    Filter results are cached per plan (they depend on the workers, not on capacity).
    Past ``SCORE_ALL_UP_TO`` workers, each level stops after ``WINDOW`` candidate
    workers, taken in an order that rotates from one replica to the next, as
    kube-scheduler scores a share of the feasible nodes in large clusters.
    """

    def __init__(
        self, workers: Sequence[Worker], capacity: Capacity, agent_labels: Mapping[str, Mapping[str, str]]
    ) -> None:
        self.workers = tuple(workers)
        self.capacity = capacity
        self.agent_labels = agent_labels
        self._filtered: dict[tuple[object, ...], Filtered] = {}
        self._failed: dict[tuple[object, ...], Unschedulable] = {}
        self._offset = 0

    def _filter(
        self, ctx: ModelContext, selector: WorkerSelector | None, manual: frozenset[tuple[str, int]] | None
    ) -> Filtered:
        model = ctx.model
        local = model.spec.source.local_path
        key = (
            selector.metadata.name if selector else None,
            tuple(sorted(model.spec.scheduling.match_labels.items())),
            ctx.backend,
            local,
            manual,
        )
        if key not in self._filtered:
            holders = None
            if local is not None:
                # Only Ready workers count: a lost worker's last report would make it the only
                # holder, and its replicas could never move (agents list a local path only
                # while one of their instances names it).
                reported = frozenset(w.name for w in self.workers if w.state == "Ready" and w.file(local) is not None)
                holders = reported or None  # nobody reports it: the file was read where the reconciler runs
            workers = [w for w in self.workers if manual is None or any(w.name == name for name, _ in manual)]
            self._filtered[key] = filter_workers(workers, model, ctx.backend, selector, self.agent_labels, holders)
        return self._filtered[key]

    def _order(self, workers: tuple[Worker, ...], prefer: str | None) -> tuple[tuple[Worker, ...], int | None]:
        if len(workers) <= SCORE_ALL_UP_TO:
            return workers, None
        start = self._offset % len(workers)
        self._offset += WINDOW
        ordered = workers[start:] + workers[:start]
        if prefer is not None:
            ordered = tuple(sorted(ordered, key=lambda w: w.name != prefer))
        return ordered, WINDOW

    def place(
        self, ctx: ModelContext, selector: WorkerSelector | None, prefer_worker: str | None = None
    ) -> Placement | Unschedulable:
        # Capacity only shrinks within a plan: what failed once fails again for the same needs.
        needs = (
            ctx.model.spec.model_dump_json(exclude={"replicas", "env", "restart_on_error", "generic_proxy"}),
            ctx.backend,
            ctx.context,
            ctx.parallel,
            ctx.gmu,
            ctx.category,
            ctx.metadata.source if ctx.metadata else None,
            selector.metadata.name if selector else None,
        )
        if needs in self._failed:
            return self._failed[needs]
        outcome = self._place(ctx, selector, prefer_worker)
        if isinstance(outcome, Unschedulable):
            self._failed[needs] = outcome
        return outcome

    def _place(
        self, ctx: ModelContext, selector: WorkerSelector | None, prefer_worker: str | None
    ) -> Placement | Unschedulable:
        model = ctx.model
        if model.spec.extended_kv_cache is not None and ctx.backend not in EXTENDED_KV_CACHE:
            return Unschedulable(
                f"extendedKVCache needs vllm or sglang (LMCache); backend auto chose {ctx.backend} for this model"
            )
        if ctx.metadata is None and ctx.backend != "custom":
            return Unschedulable(f"cannot read the model's metadata: {ctx.metadata_error or 'unknown source'}")
        manual = _manual_gpus(model)
        if manual is not None and not any(w.name == name for w in self.workers for name, _ in manual):
            named = ", ".join(sorted({name for name, _ in manual}))
            return Unschedulable(f"No suitable workers: gpuSelector names {named}, which no agent reports")
        filtered = self._filter(ctx, selector, manual)
        if not filtered.passed:
            return Unschedulable(f"No suitable workers: {filtered.summary()}")
        workers, limit = self._order(filtered.passed, prefer_worker)
        fixed = model.spec.scheduling.gpus_per_replica
        request = Request(
            model=ctx.name,
            backend=ctx.backend,
            category=ctx.category,
            workers=workers,
            manual_gpus=manual,
            gpus_per_replica=fixed if isinstance(fixed, int) else None,
            cpu_offloading=ctx.cpu_offloading,
            distributed=ctx.distributed,
            placement=ctx.placement,
            limit=limit,
        )
        outcome = _candidates(ctx, request, self.capacity)
        if not outcome.candidates:
            # Each note may be a sentence of its own; a period before "; " reads badly.
            notes = "; ".join(note.rstrip(".") for note in outcome.notes) or "nothing fits"
            rejected = f" ({filtered.summary()})" if filtered.rejected else ""
            return Unschedulable(f"No suitable workers: {notes}{rejected}")
        return best(outcome.candidates, self.capacity, ctx.name, ctx.placement, prefer_worker)


def _candidates(ctx: ModelContext, request: Request, capacity: Capacity) -> Outcome:
    metadata = ctx.metadata
    if ctx.backend in LLAMA_FAMILY:
        if metadata is None or metadata.gguf is None:
            return Outcome(notes=[f"backend {ctx.backend} needs a GGUF file"])
        python_server = ctx.backend == "llama-cpp"
        logits_all = python_server and (param_value(ctx.params, "--logits_all") or "").lower() in ("true", "1")
        host = ctx.context * metadata.gguf.vocab_size * 4 if logits_all else 0
        shape = GGUFShape(metadata.gguf, ctx.context, 1 if python_server else ctx.parallel, python_server, host)
        return gguf_candidates(request, shape, capacity)
    weights = metadata.weight_bytes if metadata else 0
    if ctx.backend in GPU_SHARE_FAMILY:
        assert metadata is not None
        cache = ctx.model.spec.extended_kv_cache
        share = GPUShare(
            vllm_estimate(weights, ctx.category),
            ctx.gmu,
            metadata.attention_heads,
            cache.ram_ratio if cache else None,
            int(cache.max_ram_gib * GIB) if cache and cache.max_ram_gib is not None else None,
        )
        return share_candidates(request, share, capacity)
    estimate = vox_box_estimate(weights, ctx.category) if ctx.backend == "vox-box" else weights
    wants_gpu = request.gpus_per_replica is not None or request.manual_gpus is not None
    if wants_gpu or ctx.backend == "vox-box":
        outcome = share_candidates(request, GPUShare(estimate, 0.0, 0), capacity)
        if outcome.candidates or wants_gpu or not ctx.cpu_offloading:
            return outcome
    return cpu_candidates(request, estimate, capacity)
