"""Rendering rules: defaults, user overrides with aliases, visible devices, custom commands."""

from __future__ import annotations

import json

import pytest

from reconciler.observe import ObservedState
from reconciler.render import canonical, merge
from reconciler.spec import BackendParameter
from tests.plan.helpers import desired, run, snapshot, worker

VLLM = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: chat}
spec:
  source: {huggingface: {repo: meta-llama/Llama-3.1-8B-Instruct}}
  backend: vllm
"""


def only_create(result):
    [action] = [a for a in result.actions if a.action == "create"]
    return action.instance


def test_vllm_defaults():
    spec = only_create(run(desired(VLLM), snapshot("rtx4090.yaml")))
    assert spec.argv[:3] == ["vllm", "serve", "/var/lib/reconciler/cache/huggingface/meta-llama/Llama-3.1-8B-Instruct"]
    assert spec.argv[spec.argv.index("--max-model-len") + 1] == "8192"  # the model allows 131072
    assert spec.argv[spec.argv.index("--gpu-memory-utilization") + 1] == "0.9"
    assert spec.argv[spec.argv.index("--served-model-name") + 1] == "chat"
    assert "--tensor-parallel-size" not in spec.argv
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "0"} and spec.health_path == "/v1/models"


def test_user_parameters_override_defaults_and_come_last():
    text = VLLM + "  backendParameters: [--max-model-len=4096, '--port 9999', [--served-model-name, mine]]\n"
    spec = only_create(run(desired(text), snapshot("rtx4090.yaml")))
    assert spec.argv.count("--max-model-len") == 1 and spec.argv.count("--port") == 1
    assert spec.argv[-6:] == ["--max-model-len", "4096", "--port", "9999", "--served-model-name", "mine"]


def test_max_model_len_only_when_the_model_allows_more():
    text = VLLM.replace("meta-llama/Llama-3.1-8B-Instruct", "BAAI/bge-m3") + "  category: embedding\n"
    spec = only_create(run(desired(text), snapshot("rtx4090.yaml")))
    assert "--max-model-len" not in spec.argv and "--gpu-memory-utilization" not in spec.argv


@pytest.mark.parametrize(
    ("vendor", "variable"),
    [
        ("amd", "ROCR_VISIBLE_DEVICES"),
        ("ascend", "ASCEND_RT_VISIBLE_DEVICES"),
        ("hygon", "HIP_VISIBLE_DEVICES"),
        ("cambricon", "MLU_VISIBLE_DEVICES"),
        ("nvidia", "CUDA_VISIBLE_DEVICES"),
    ],
)
def test_visible_devices_by_vendor(vendor, variable):
    base = worker("w", gpus=[80])
    gpus = [g.model_copy(update={"vendor": vendor}) for g in base.gpus]
    spec = only_create(run(desired(VLLM), ObservedState.of([base.model_copy(update={"gpus": gpus})])))
    assert spec.env == {variable: "0"}


def test_user_env_is_kept():
    spec = only_create(run(desired(VLLM + "  env: {HF_HUB_OFFLINE: '1'}\n"), snapshot("rtx4090.yaml")))
    assert spec.env["HF_HUB_OFFLINE"] == "1"


def test_custom_backend_renders_its_template():
    text = VLLM.replace("backend: vllm", "backend: custom") + (
        "  custom: {command: \"my-server --model '{{ model_path }}' --port {{ port }}\", healthPath: /ready}\n"
        "  backendParameters: [--verbose]\n"
    )
    spec = only_create(run(desired(text), snapshot("cpu-only.yaml")))
    assert spec.argv == [
        "my-server",
        "--model",
        "/var/lib/reconciler/cache/huggingface/meta-llama/Llama-3.1-8B-Instruct",
        "--port",
        "40000",
        "--verbose",
    ]
    assert spec.health_path == "/ready"


def test_llama_box_defaults_and_embedding_parallel():
    text = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: rerank}
spec:
  source: {huggingface: {repo: gpustack/bge-reranker-v2-m3-GGUF, file: bge-reranker-v2-m3-Q8_0.gguf}}
  category: reranker
"""
    spec = only_create(run(desired(text), snapshot("rtx4090.yaml")))
    assert spec.argv[0] == "llama-box" and spec.health_path == "/health"
    for flag in ("--embeddings", "--rerank", "--no-mmap", "--no-warmup"):
        assert flag in spec.argv
    assert spec.argv[spec.argv.index("--parallel") + 1] == "1"


def test_merge_and_aliases():
    merged = merge(
        ["llama-box", "--ctx-size", "8192", "--parallel", "4", "--no-mmap"],
        [BackendParameter("-c", "2048"), BackendParameter("--seed", "-1")],
    )
    assert merged == ["llama-box", "--parallel", "4", "--no-mmap", "-c", "2048", "--seed", "-1"]
    assert canonical("--n_gpu_layers") == canonical("-ngl") == "gpu-layers"


def test_extended_kv_cache_for_vllm_renders_lmcache_and_claims_its_ram():
    text = VLLM + "  extendedKVCache: {ramRatio: 2, chunkSize: 512}\n"
    spec = only_create(run(desired(text), snapshot("rtx4090.yaml")))
    config = spec.argv[spec.argv.index("--kv-transfer-config") + 1]
    assert json.loads(config) == {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    vram = spec.claim.vram[0]  # 24 GiB x 0.9
    assert spec.claim.ram == 2 * vram
    assert spec.env["LMCACHE_LOCAL_CPU"] == "True"
    assert spec.env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == f"{2 * vram / 1024**3:.2f}" == "43.20"
    assert spec.env["LMCACHE_CHUNK_SIZE"] == "512"


def test_extended_kv_cache_max_ram_overrides_the_ratio_for_sglang():
    text = VLLM.replace("backend: vllm", "backend: sglang") + "  extendedKVCache: {maxRamGiB: 8}\n"
    spec = only_create(run(desired(text), ObservedState.of([worker("desk", gpus=[24])])))
    assert "--enable-lmcache" in spec.argv
    assert spec.claim.ram == 8 * 1024**3
    assert (spec.env["LMCACHE_MAX_LOCAL_CPU_SIZE"], spec.env["LMCACHE_CHUNK_SIZE"]) == ("8.00", "256")


def test_extended_kv_cache_ram_must_fit():
    text = VLLM + "  extendedKVCache: {maxRamGiB: 100}\n"  # the desk has 64 GiB
    [pending] = run(desired(text), snapshot("rtx4090.yaml")).pending
    assert "No suitable workers" in pending.reason


def test_without_extended_kv_cache_nothing_of_lmcache():
    spec = only_create(run(desired(VLLM), snapshot("rtx4090.yaml")))
    assert "--kv-transfer-config" not in spec.argv and spec.claim.ram == 0
    assert not any(name.startswith("LMCACHE_") for name in spec.env)


def test_extended_kv_cache_env_on_every_ray_process():
    text = VLLM.replace("meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-32B-Instruct")
    text += "  extendedKVCache: {ramRatio: 1}\n"
    observed = ObservedState.of([worker("w1", ram_gib=256, gpus=[24, 24]), worker("w2", ram_gib=256, gpus=[24, 24])])
    result = run(desired(text), observed)
    created = {a.instance.role: a.instance for a in result.actions if a.action == "create"}
    assert set(created) == {"main", "ray-head", "ray-worker"}
    for role in ("main", "ray-head", "ray-worker"):
        assert created[role].env["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "43.20", role  # 2 x 24 GiB x 0.9 per node
    assert created["ray-head"].claim.ram == 0  # the main instance on the same node claims its cache
    assert created["ray-worker"].claim.ram == created["main"].claim.ram > 0


def test_ray_worker_listens_on_its_port_for_the_tcp_probe():
    # `ray start --block` of a worker opens no port of its own; its raylet listens on --node-manager-port.
    text = VLLM.replace("meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-32B-Instruct")
    observed = ObservedState.of([worker("w1", gpus=[24, 24]), worker("w2", gpus=[24, 24])])
    created = {a.instance.role: a.instance for a in run(desired(text), observed).actions if a.action == "create"}
    ray_worker, head = created["ray-worker"], created["ray-head"]
    assert ray_worker.argv[ray_worker.argv.index("--node-manager-port") + 1] == str(ray_worker.port)
    assert ray_worker.health_path == "" and head.health_path == ""  # "": the agent probes the port over TCP
    assert head.argv[head.argv.index("--port") + 1] == str(head.port)
