"""Checks beyond the schema, over all resources of one desired state at once.

Each rule returns diagnostics and never stops at the first: a commit is judged whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from reconciler.errors import Diagnostic
from reconciler.spec.env_names import refused_env
from reconciler.spec.loader import Loaded
from reconciler.spec.models import Cluster, Model, ModelRoute, WorkerSelector
from reconciler.spec.params import ParameterError, parse_backend_parameters

VISIBLE_DEVICES_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES",
    "MLU_VISIBLE_DEVICES",
)
RENDERER_ENV_PREFIX = "RECONCILER_"
GPU_SELECTOR = re.compile(r"^[A-Za-z0-9]([\w.-]*[A-Za-z0-9])?:\d{1,3}$")
ABSOLUTE_PATH = re.compile(r"^(/|[A-Za-z]:[\\/])")
NO_CPU_OFFLOADING = ("vllm", "mindie")
NO_DISTRIBUTED = ("vox-box", "mindie")
EXTENDED_KV_CACHE = ("vllm", "sglang")  # LMCache plugs into these only
LMCACHE_ENV = ("LMCACHE_LOCAL_CPU", "LMCACHE_MAX_LOCAL_CPU_SIZE", "LMCACHE_CHUNK_SIZE")


def _unique_names(items: Sequence[Loaded]) -> Iterator[Diagnostic]:
    seen: dict[tuple[str, str], Loaded] = {}
    for item in items:
        key = (item.resource.kind, item.resource.metadata.name)
        first = seen.setdefault(key, item)
        if first is not item:
            where = f"{first.document.path}:{first.document.position(['metadata', 'name'])[0]}"
            yield item.document.diagnostic(
                item.ref, ["metadata", "name"], f"duplicate {key[0]} name {key[1]!r} (first defined at {where})"
            )


def _one_cluster(items: Sequence[Loaded]) -> Iterator[Diagnostic]:
    clusters = [i for i in items if isinstance(i.resource, Cluster)]
    for extra in clusters[1:]:
        first = clusters[0]
        yield extra.document.diagnostic(
            extra.ref, ["kind"], f"only one Cluster per desired state; {first.ref} is in {first.document.path}"
        )


def _cluster_rules(item: Loaded, cluster: Cluster) -> Iterator[Diagnostic]:
    seen: set[str] = set()
    for index, agent in enumerate(cluster.spec.agents):
        if agent.name in seen:
            yield item.document.diagnostic(
                item.ref, ["spec", "agents", index, "name"], f"duplicate agent {agent.name!r}"
            )
        seen.add(agent.name)
    keys: set[str] = set()
    for index, key in enumerate(cluster.spec.router.api_keys):
        if key.name in keys:
            yield item.document.diagnostic(
                item.ref, ["spec", "router", "apiKeys", index, "name"], f"duplicate API key name {key.name!r}"
            )
        keys.add(key.name)


def _selector_rules(item: Loaded, selector: WorkerSelector) -> Iterator[Diagnostic]:
    for index, expression in enumerate(selector.spec.match_expressions):
        at: list[str | int] = ["spec", "matchExpressions", index, "values"]
        if expression.operator in ("In", "NotIn") and not expression.values:
            yield item.document.diagnostic(item.ref, at, f"operator {expression.operator} needs at least one value")
        if expression.operator in ("Exists", "DoesNotExist") and expression.values:
            yield item.document.diagnostic(item.ref, at, f"operator {expression.operator} takes no values")


def _source_rules(item: Loaded, model: Model) -> Iterator[Diagnostic]:
    source = model.spec.source
    present = [
        name
        for name, value in (
            ("huggingface", source.huggingface),
            ("modelscope", source.modelscope),
            ("localPath", source.local_path),
        )
        if value is not None
    ]
    if not present:
        yield item.document.diagnostic(
            item.ref, ["spec", "source"], "exactly one of huggingface, modelscope, localPath is required"
        )
    elif len(present) > 1:
        yield item.document.diagnostic(
            item.ref,
            ["spec", "source", present[1]],
            f"exactly one source may be set; found {', '.join(present)}",
        )
    if source.local_path is not None and not ABSOLUTE_PATH.match(source.local_path):
        yield item.document.diagnostic(
            item.ref,
            ["spec", "source", "localPath"],
            f"must be an absolute path on the workers, not {source.local_path!r}",
        )


def _scheduling_rules(item: Loaded, model: Model, selectors: dict[str, WorkerSelector]) -> Iterator[Diagnostic]:
    scheduling = model.spec.scheduling
    base: list[str | int] = ["spec", "scheduling"]
    if scheduling.worker_selector is not None and scheduling.worker_selector not in selectors:
        known = ", ".join(sorted(selectors)) or "none defined"
        yield item.document.diagnostic(
            item.ref,
            [*base, "workerSelector"],
            f"no WorkerSelector named {scheduling.worker_selector!r} (known: {known})",
        )
    seen: set[str] = set()
    for index, entry in enumerate(scheduling.gpu_selector):
        at: list[str | int] = [*base, "gpuSelector", index]
        if not GPU_SELECTOR.match(entry):
            yield item.document.diagnostic(item.ref, at, f"{entry!r} is not of the form worker:index (e.g. worker-a:0)")
        elif entry in seen:
            yield item.document.diagnostic(item.ref, at, f"{entry!r} is listed twice")
        seen.add(entry)
    if scheduling.mode == "manual" and not scheduling.gpu_selector:
        yield item.document.diagnostic(
            item.ref, [*base, "gpuSelector"], "mode manual needs at least one gpuSelector entry"
        )
    per_replica = scheduling.gpus_per_replica
    if isinstance(per_replica, int) and scheduling.gpu_selector and per_replica > len(scheduling.gpu_selector):
        yield item.document.diagnostic(
            item.ref,
            [*base, "gpusPerReplica"],
            f"{per_replica} GPUs per replica but gpuSelector lists only {len(scheduling.gpu_selector)}",
        )


def _backend_rules(item: Loaded, model: Model) -> Iterator[Diagnostic]:
    spec = model.spec
    if spec.backend == "custom":
        if spec.custom is None:
            yield item.document.diagnostic(item.ref, ["spec", "custom"], "backend custom requires custom.command")
        else:
            yield from _custom_command(item, spec.custom.command)
    elif spec.custom is not None:
        yield item.document.diagnostic(
            item.ref, ["spec", "custom"], f"custom is only used with backend custom, not {spec.backend}"
        )
    if spec.cpu_offloading and spec.backend in NO_CPU_OFFLOADING:
        yield item.document.diagnostic(
            item.ref, ["spec", "cpuOffloading"], f"backend {spec.backend} does not support cpuOffloading"
        )
    if spec.extended_kv_cache is not None and spec.backend not in EXTENDED_KV_CACHE:
        if spec.backend != "auto":
            yield item.document.diagnostic(
                item.ref,
                ["spec", "extendedKVCache"],
                f"backend {spec.backend} cannot use extendedKVCache (LMCache works with vllm and sglang)",
            )
        elif spec.source.is_gguf():
            yield item.document.diagnostic(
                item.ref,
                ["spec", "extendedKVCache"],
                "a GGUF file runs on llama-box, which cannot use extendedKVCache (LMCache works with vllm and sglang)",
            )
    if spec.distributed_inference and spec.backend in NO_DISTRIBUTED:
        yield item.document.diagnostic(
            item.ref, ["spec", "distributedInference"], f"backend {spec.backend} does not support distributed inference"
        )


def _custom_command(item: Loaded, command: str) -> Iterator[Diagnostic]:
    # jinja2 loads only for manifests with a custom command: validate starts faster without it.
    from reconciler.spec.command import CommandTemplateError, check_command

    try:
        check_command(command)
    except CommandTemplateError as exc:
        yield item.document.diagnostic(item.ref, ["spec", "custom", "command"], str(exc))


def _env_rules(item: Loaded, model: Model) -> Iterator[Diagnostic]:
    for name in model.spec.env:
        if name in VISIBLE_DEVICES_ENV:
            yield item.document.diagnostic(
                item.ref, ["spec", "env", name], f"{name} is set from the scheduled GPUs; use scheduling.gpuSelector"
            )
        elif name.startswith(RENDERER_ENV_PREFIX):
            yield item.document.diagnostic(
                item.ref, ["spec", "env", name], f"variables starting with {RENDERER_ENV_PREFIX} are set by reconciler"
            )
        elif name in LMCACHE_ENV and model.spec.extended_kv_cache is not None:
            yield item.document.diagnostic(
                item.ref, ["spec", "env", name], f"{name} is set from extendedKVCache; change it there"
            )
        elif (refusal := refused_env(name)) is not None:
            yield item.document.diagnostic(item.ref, ["spec", "env", name], refusal)


def _parameter_rules(item: Loaded, model: Model) -> Iterator[Diagnostic]:
    try:
        parse_backend_parameters(model.spec.backend_parameters)
    except ParameterError as exc:
        yield item.document.diagnostic(item.ref, ["spec", "backendParameters", exc.index], str(exc))


def _route_rules(item: Loaded, route: ModelRoute, models: set[str]) -> Iterator[Diagnostic]:
    known = ", ".join(sorted(models)) or "none defined"
    if route.metadata.name in models:
        yield item.document.diagnostic(
            item.ref, ["metadata", "name"], f"a Model is named {route.metadata.name!r}; a route may not shadow it"
        )
    for index, target in enumerate(route.spec.targets):
        if target.model not in models:
            at: list[str | int] = ["spec", "targets", index, "model"]
            yield item.document.diagnostic(item.ref, at, f"no Model named {target.model!r} (known: {known})")
    if not any(target.weight for target in route.spec.targets):
        yield item.document.diagnostic(item.ref, ["spec", "targets"], "at least one target needs a weight above 0")
    for index, name in enumerate(route.spec.fallback):
        if name not in models:
            yield item.document.diagnostic(
                item.ref, ["spec", "fallback", index], f"no Model named {name!r} (known: {known})"
            )


def check(items: Sequence[Loaded]) -> list[Diagnostic]:
    """Every semantic problem of one desired state."""
    selectors = {i.resource.metadata.name: i.resource for i in items if isinstance(i.resource, WorkerSelector)}
    models = {i.resource.metadata.name for i in items if isinstance(i.resource, Model)}
    found = [*_unique_names(items), *_one_cluster(items)]
    for item in items:
        resource = item.resource
        if isinstance(resource, Model):
            for rule in (_source_rules, _backend_rules, _env_rules, _parameter_rules):
                found.extend(rule(item, resource))
            found.extend(_scheduling_rules(item, resource, selectors))
        elif isinstance(resource, WorkerSelector):
            found.extend(_selector_rules(item, resource))
        elif isinstance(resource, ModelRoute):
            found.extend(_route_rules(item, resource, models))
        else:
            found.extend(_cluster_rules(item, resource))
    return found
