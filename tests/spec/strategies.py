"""Hypothesis strategies for valid manifests (as plain camelCase data)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from reconciler.spec.env_names import refused_env

names = st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
label_keys = st.from_regex(r"([a-z]{1,5}\.)?[a-z][-a-z0-9_.]{0,8}[a-z0-9]", fullmatch=True)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Co", "Cn")), max_size=20)
label_values = texts.filter(lambda v: len(v) <= 63)
labels = st.dictionaries(label_keys, label_values, max_size=3)
# Names on the agents' allowlist (reconciler.spec.env_names), never one set from the placement.
env_names = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["CUDA_", "HF_", "VLLM_", "NCCL_", "OMP_", "LLAMA_", "TORCH_", "LC_"]),
    st.from_regex(r"[A-Z0-9_]{1,12}", fullmatch=True),
).filter(lambda n: refused_env(n) is None and "VISIBLE_DEVICES" not in n)
flags = st.from_regex(r"--[a-z][a-z0-9-]{0,10}", fullmatch=True)
repos = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,8}/[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)
paths = st.from_regex(r"/[a-z0-9_./-]{1,30}", fullmatch=True)


def metadata() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"name": names}, optional={"labels": labels})


def sources() -> st.SearchStrategy[dict[str, Any]]:
    hub = st.fixed_dictionaries({"repo": repos}, optional={"file": st.sampled_from(["*Q4_K_M.gguf", "model.gguf"])})
    return st.one_of(
        hub.map(lambda h: {"huggingface": h}),
        hub.map(lambda h: {"modelscope": h}),
        paths.map(lambda p: {"localPath": p}),
    )


@st.composite
def model_specs(draw: st.DrawFn, selector_names: list[str]) -> dict[str, Any]:
    backend = draw(st.sampled_from(["auto", "llama-box", "llama-cpp", "vllm", "sglang", "vox-box", "mindie", "custom"]))
    spec: dict[str, Any] = {"source": draw(sources()), "backend": backend}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "replicas": st.integers(0, 1024),
        "category": st.sampled_from(["llm", "embedding", "reranker", "image", "speech-to-text", "text-to-speech"]),
        "backendVersion": st.from_regex(r"v?\d{1,2}\.\d{1,2}\.\d{1,2}", fullmatch=True),
        "backendParameters": st.lists(
            st.one_of(
                st.tuples(flags, st.integers(0, 99999)).map(lambda t: f"{t[0]}={t[1]}"),
                st.tuples(flags, names).map(list),
                flags,
            ),
            max_size=4,
        ),
        "env": st.dictionaries(env_names, texts, max_size=3),
        "restartOnError": st.booleans(),
        "genericProxy": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    if backend in ("vllm", "sglang") and draw(st.booleans()):  # LMCache's backends only
        spec["extendedKVCache"] = draw(
            st.fixed_dictionaries(
                {}, optional={"ramRatio": st.floats(0.1, 8, allow_nan=False), "chunkSize": st.integers(1, 4096)}
            )
        )
    if backend not in ("vllm", "mindie") and draw(st.booleans()):
        spec["cpuOffloading"] = draw(st.booleans())
    if backend not in ("vox-box", "mindie") and draw(st.booleans()):
        spec["distributedInference"] = draw(st.booleans())
    if backend == "custom":
        spec["custom"] = {"command": "serve --port {{ port }} " + draw(names)}
    scheduling: dict[str, Any] = {}
    if draw(st.booleans()):
        scheduling["placement"] = draw(st.sampled_from(["spread", "binpack"]))
    if selector_names and draw(st.booleans()):
        scheduling["workerSelector"] = draw(st.sampled_from(selector_names))
    if draw(st.booleans()):
        scheduling["matchLabels"] = draw(labels)
    if draw(st.booleans()):
        gpus = draw(
            st.lists(
                st.tuples(names, st.integers(0, 15)).map(lambda t: f"{t[0]}:{t[1]}"),
                min_size=1,
                max_size=4,
                unique=True,
            )
        )
        scheduling["mode"] = "manual"
        scheduling["gpuSelector"] = gpus
        scheduling["gpusPerReplica"] = draw(st.integers(1, len(gpus)))
    if scheduling:
        spec["scheduling"] = scheduling
    return spec


def selectors() -> st.SearchStrategy[dict[str, Any]]:
    expression = st.one_of(
        st.fixed_dictionaries(
            {
                "key": label_keys,
                "operator": st.sampled_from(["In", "NotIn"]),
                "values": st.lists(label_values, min_size=1, max_size=3),
            }
        ),
        st.fixed_dictionaries({"key": label_keys, "operator": st.sampled_from(["Exists", "DoesNotExist"])}),
    )
    return st.fixed_dictionaries(
        {
            "apiVersion": st.just("reconciler/v1"),
            "kind": st.just("WorkerSelector"),
            "metadata": metadata(),
            "spec": st.fixed_dictionaries(
                {}, optional={"matchLabels": labels, "matchExpressions": st.lists(expression, max_size=3)}
            ),
        }
    )


def clusters() -> st.SearchStrategy[dict[str, Any]]:
    agents = st.lists(
        st.fixed_dictionaries(
            {"name": names, "url": st.integers(1024, 65535).map(lambda p: f"http://127.0.0.1:{p}")},
            optional={"labels": labels},
        ),
        max_size=4,
        unique_by=lambda a: a["name"],
    )
    spec = st.fixed_dictionaries(
        {},
        optional={
            "agents": agents,
            "reserved": st.fixed_dictionaries(
                {}, optional={"ramGiB": st.floats(0, 64, allow_nan=False), "vramGiB": st.integers(0, 8)}
            ),
            "portRange": st.integers(1024, 60000).map(lambda p: f"{p}-{p + 63}"),
            "defaults": st.fixed_dictionaries(
                {}, optional={"contextSize": st.integers(256, 131072), "parallel": st.integers(1, 16)}
            ),
            "sync": st.fixed_dictionaries(
                {}, optional={"interval": st.sampled_from(["30s", "5m", "1h", "1000ms", "24h"]), "prune": st.booleans()}
            ),
        },
    )
    return st.fixed_dictionaries(
        {"apiVersion": st.just("reconciler/v1"), "kind": st.just("Cluster"), "metadata": metadata(), "spec": spec}
    )


@st.composite
def desired_documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A valid desired state: maybe a cluster, unique selectors, unique models referring to them."""
    docs: list[dict[str, Any]] = []
    if draw(st.booleans()):
        docs.append(draw(clusters()))
    sels = draw(st.lists(selectors(), max_size=3, unique_by=lambda s: s["metadata"]["name"]))
    docs.extend(sels)
    selector_names = [s["metadata"]["name"] for s in sels]
    model_names = draw(st.lists(names, max_size=4, unique=True))
    for name in model_names:
        meta = draw(metadata())
        meta["name"] = name
        docs.append(
            {
                "apiVersion": "reconciler/v1",
                "kind": "Model",
                "metadata": meta,
                "spec": draw(model_specs(selector_names)),
            }
        )
    return docs
