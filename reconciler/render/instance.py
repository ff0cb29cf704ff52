"""Render a placement into the processes an agent runs: argv, env, port, health path.

Templates print one argv token per line, so no shell quoting is ever involved. The
user's backendParameters replace defaults of the same flag (aliases included) and
come last; host, port and served-model-name are added only where the user did not
set them, by the same rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from reconciler.estimate.claims import extended_kv_ram
from reconciler.estimate.metadata import ModelMetadata, source_key
from reconciler.observe import GIB, HelperRole, InstanceSpec, ModelFileRef, ResourceClaim, Worker
from reconciler.schedule import ModelContext, Placement
from reconciler.spec import BackendParameter
from reconciler.spec.command import compile_command, placeholder, substitute, substitution

TEMPLATES = Path(__file__).parent / "templates"
VISIBLE_DEVICES = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "iluvatar": "CUDA_VISIBLE_DEVICES",
    "amd": "ROCR_VISIBLE_DEVICES",
    "ascend": "ASCEND_RT_VISIBLE_DEVICES",
    "huawei": "ASCEND_RT_VISIBLE_DEVICES",
    "hygon": "HIP_VISIBLE_DEVICES",
    "cambricon": "MLU_VISIBLE_DEVICES",
}
ALIASES = {
    "c": "ctx-size",
    "np": "parallel",
    "ngl": "gpu-layers",
    "n-gpu-layers": "gpu-layers",
    "ts": "tensor-split",
    "a": "alias",
    "m": "model",
    "tp": "tensor-parallel-size",
    "pp": "pipeline-parallel-size",
    "tp-size": "tensor-parallel-size",
    "pp-size": "pipeline-parallel-size",
}
HEALTH_PATHS = {"llama-box": "/health"}
BACKEND_EXECUTABLES = {
    "llama-cpp": "llama-cpp",
    "llama-box": "llama-box",
    "vllm": "vllm",
    "sglang": "sglang",
    "vox-box": "vox-box",
    "mindie": "mindie",
}


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        finalize=placeholder,
        auto_reload=False,  # the templates ship with the package: no stat per render
    )


def canonical(flag: str) -> str:
    name = flag.lstrip("-").replace("_", "-")
    return ALIASES.get(name, name)


def chat_format(metadata: ModelMetadata | None, category: str) -> str | None:
    """The llama_cpp.server chat format for a GGUF that carries no chat template of its own."""
    if metadata is None or metadata.gguf is None or metadata.gguf.has_chat_template or category != "llm":
        return None
    arch = metadata.gguf.architecture
    if arch.startswith("gemma"):
        return "gemma"
    if arch.startswith("qwen"):
        return "qwen"
    if arch in ("mistral", "mixtral"):
        return "mistral-instruct"
    if arch == "llama":
        return "llama-3" if metadata.gguf.vocab_size >= 128_000 else "llama-2"
    return "chatml"


def model_location(ctx: ModelContext, worker: Worker) -> tuple[str, list[ModelFileRef]]:
    """The weights' path on the worker, and what the agent must fetch to put them there."""
    source = ctx.model.spec.source
    key = source_key(source)
    if source.local_path is not None:
        return source.local_path, [ModelFileRef(source=key, path=source.local_path)]
    hub = source.huggingface or source.modelscope
    assert hub is not None
    folder = "huggingface" if source.huggingface else "modelscope"
    root = f"{worker.cache_dir}/{folder}/{hub.repo}"
    file = (ctx.metadata.file if ctx.metadata and ctx.metadata.file else hub.file) or ""
    ref = ModelFileRef(
        source=key, path=f"{root}/{file}" if file else root, repo=hub.repo, file=file, revision=hub.revision or ""
    )
    refs = [ref]
    if ctx.metadata and ctx.metadata.mmproj and file:
        refs.append(
            ModelFileRef(
                source=key,
                path=f"{root}/{ctx.metadata.mmproj}",
                repo=hub.repo,
                file=ctx.metadata.mmproj,
                revision=hub.revision or "",
            )
        )
    return ref.path, refs


def merge(defaults: Sequence[str], user: Sequence[BackendParameter]) -> list[str]:
    """Template argv with every flag the user set removed, then the user's flags appended."""
    user_flags = {canonical(p.flag) for p in user}
    argv: list[str] = []
    skipping = False
    for index, token in enumerate(defaults):
        is_flag = token.startswith("-") and index > 0 and not _is_negative_number(token)
        if is_flag:
            skipping = canonical(token) in user_flags
        if not skipping:
            argv.append(token)
    for param in user:
        argv.extend(param.argv())
    return argv


def _is_negative_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def render_template(name: str, variables: dict[str, Any]) -> list[str]:
    """One argv token per template line; a substituted value never adds a line, even with a newline in it."""
    with substitution() as values:
        text = _environment().get_template(f"{name}.j2").render(**variables)
    return [substitute(line.strip(), values) for line in text.splitlines() if line.strip()]


def spec_hash(spec: InstanceSpec) -> str:
    body = spec.model_dump(mode="json", exclude={"claim", "spec_hash", "drain_seconds"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def finish(spec: InstanceSpec) -> InstanceSpec:
    return spec.model_copy(update={"spec_hash": spec_hash(spec)})


def _visible_devices(worker: Worker, gpus: Sequence[int]) -> dict[str, str]:
    if not worker.gpus:
        return {}
    variable = VISIBLE_DEVICES.get(worker.gpus[0].vendor.lower(), "CUDA_VISIBLE_DEVICES")
    return {variable: ",".join(str(i) for i in gpus)}


def _executable(worker: Worker, backend: str) -> str | None:
    installed = worker.backend(BACKEND_EXECUTABLES.get(backend, backend))
    return installed.path if installed and installed.path else None


LMCACHE_CONNECTOR = json.dumps({"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}, separators=(",", ":"))


def lmcache_env(ctx: ModelContext, vram: int) -> dict[str, str]:
    """LMCache's settings for a process holding ``vram`` bytes of GPU memory (empty without extendedKVCache).

    Every process whose GPUs serve the model gets them: with Ray, the GPU workers are
    spawned by the Ray head and workers, and inherit their environment.
    """
    cache = ctx.model.spec.extended_kv_cache
    if cache is None:
        return {}
    max_ram = int(cache.max_ram_gib * GIB) if cache.max_ram_gib is not None else None
    size = extended_kv_ram(vram, cache.ram_ratio, max_ram)
    return {
        "LMCACHE_LOCAL_CPU": "True",
        "LMCACHE_MAX_LOCAL_CPU_SIZE": f"{size / GIB:.2f}",  # LMCache reads GiB
        "LMCACHE_CHUNK_SIZE": str(cache.chunk_size),
    }


def _max_model_len(ctx: ModelContext) -> int | None:
    allowed = ctx.metadata.max_position_embeddings if ctx.metadata else 0
    return ctx.context if allowed > ctx.context and ctx.category == "llm" else None


def render_main(
    ctx: ModelContext,
    placement: Placement,
    worker: Worker,
    port: int,
    instance_id: str,
    replica: int,
    model_hash: str,
    rpc: Sequence[str] = (),
    env_extra: dict[str, str] | None = None,
) -> InstanceSpec:
    path, files = model_location(ctx, worker)
    backend = placement.backend
    user_params = ctx.params
    if backend == "custom":
        assert ctx.model.spec.custom is not None
        command = compile_command(ctx.model.spec.custom.command).render(
            {
                "port": port,
                "model_path": path,
                "model_name": ctx.name,
                "host": "0.0.0.0",
                "gpus": ",".join(map(str, placement.gpus)),
                "worker": worker.name,
                "context": ctx.context,
                "data_dir": worker.data_dir,
            }
        )
        argv = command + [token for p in user_params for token in p.argv()]
        health = ctx.model.spec.custom.health_path
    else:
        variables = {
            "executable": _executable(worker, backend),
            "model_path": path,
            "port": port,
            "name": ctx.name,
            "category": ctx.category,
            "context": ctx.context,
            "parallel": ctx.parallel,
            "gpus": placement.gpus,
            "offload_layers": placement.offload_layers if placement.offload_layers is not None else -1,
            "tensor_split": placement.tensor_split,
            "rpc": list(rpc),
            "mmproj": f"{Path(path).parent}/{ctx.metadata.mmproj}" if ctx.metadata and ctx.metadata.mmproj else None,
            "chat_format": chat_format(ctx.metadata, ctx.category) if backend == "llama-cpp" else None,
            "tensor_parallel": placement.tensor_parallel,
            "pipeline_parallel": placement.pipeline_parallel,
            "gmu": placement.gpu_memory_utilization,
            "max_model_len": _max_model_len(ctx),
            "data_dir": worker.data_dir,
            "lmcache_connector": LMCACHE_CONNECTOR if ctx.model.spec.extended_kv_cache else None,
        }
        argv = merge(render_template(backend, variables), user_params)
        health = HEALTH_PATHS.get(backend, "/v1/models")
    env = {
        **_visible_devices(worker, placement.gpus),
        **lmcache_env(ctx, placement.claim.vram_total),
        **(env_extra or {}),
        **ctx.model.spec.env,
    }
    return finish(
        InstanceSpec(
            id=instance_id,
            model=ctx.name,
            replica=replica,
            role="main",
            backend=backend,
            argv=argv,
            env=env,
            port=port,
            health_path=health,
            gpus=list(placement.gpus),
            claim=placement.claim,
            files=files,
            restart_on_error=ctx.model.spec.restart_on_error,
            drain_seconds=ctx.model.spec.drain_seconds,
            model_hash=model_hash,
        )
    )


def render_helper(
    ctx: ModelContext,
    role: HelperRole,
    worker: Worker,
    gpus: Sequence[int],
    claim: ResourceClaim,
    port: int,
    instance_id: str,
    replica: int,
    model_hash: str,
    head_address: str = "",
    cache_vram: int = 0,
) -> InstanceSpec:
    """An RPC server, Ray head or Ray worker belonging to a distributed replica.

    ``cache_vram`` is the VRAM the GPU workers this Ray process spawns hold (LMCache sizes from it).
    """
    template = "llama-box-rpc-server" if role == "rpc-server" else role
    program = "llama-box" if role == "rpc-server" else "ray"
    installed = worker.backend(program)
    argv = render_template(
        template,
        {
            "executable": installed.path if installed and installed.path else None,
            "port": port,
            "gpus": list(gpus),
            "head_address": head_address,
        },
    )
    _, files = model_location(ctx, worker) if role == "ray-worker" else (None, [])
    return finish(
        InstanceSpec(
            id=instance_id,
            model=ctx.name,
            replica=replica,
            role=role,
            backend=ctx.backend,
            argv=argv,
            env={**_visible_devices(worker, gpus), **(lmcache_env(ctx, cache_vram) if role != "rpc-server" else {})},
            port=port,
            health_path="",
            gpus=list(gpus),
            claim=claim,
            files=files,
            restart_on_error=True,
            model_hash=model_hash,
        )
    )
