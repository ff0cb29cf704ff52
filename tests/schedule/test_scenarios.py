"""Placement scenarios reproduced from GPUStack's behaviour, on recorded snapshots."""

from __future__ import annotations

from reconciler.observe import ObservedState
from tests.plan.helpers import apply, desired, facts, run, safetensors, snapshot, worker

QWEN_32B = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: qwen-32b}
spec:
  source: {huggingface: {repo: Qwen/Qwen2.5-32B-Instruct}}
  backend: vllm
"""


def creates(result):
    return [a for a in result.actions if a.action == "create"]


def test_32b_on_one_24gib_gpu_is_pending_with_numbers():
    result = run(desired(QWEN_32B), snapshot("rtx4090.yaml"))
    assert not result.actions
    [pending] = result.pending
    assert "requires approximately 75.23 GiB VRAM" in pending.reason
    assert "the largest available worker (desk) has 23.00 GiB allocatable VRAM" in pending.reason
    assert "1/1 of its GPUs meet the VRAM utilization ratio (0.9), providing 21.60 GiB" in pending.reason


def test_32b_on_four_16gib_gpus_is_pending_too():
    [pending] = run(desired(QWEN_32B), snapshot("4x16gib.yaml")).pending
    assert "75.23 GiB VRAM" in pending.reason
    assert "4/4 of its GPUs meet the VRAM utilization ratio (0.9), providing 57.60 GiB" in pending.reason


def test_tensor_parallel_is_the_smallest_divisor_of_heads():
    result = run(desired(QWEN_32B), snapshot("2x8xh100.yaml"))
    [create] = creates(result)
    assert create.instance.gpus == [0, 1]
    assert create.instance.argv[create.instance.argv.index("--tensor-parallel-size") + 1] == "2"


def test_heads_not_divisible_skip_to_next_divisor():
    model = QWEN_32B.replace("Qwen/Qwen2.5-32B-Instruct", "org/odd-heads")
    odd = safetensors("hf:org/odd-heads", 150, heads=25)  # 182 GiB: three H100s by size, five by heads
    [create] = creates(run(desired(model), snapshot("2x8xh100.yaml"), facts(odd)))
    assert len(create.instance.gpus) == 5
    assert "--tensor-parallel-size" in create.instance.argv


def test_divisibility_failure_is_reported():
    model = QWEN_32B.replace("Qwen/Qwen2.5-32B-Instruct", "org/odd-heads") + "  scheduling: {gpusPerReplica: 4}\n"
    odd = safetensors("hf:org/odd-heads", 150, heads=25)
    [pending] = run(desired(model), snapshot("2x8xh100.yaml"), facts(odd)).pending
    assert "Total number of attention heads (25) must be divisible by tensor parallel size (4)" in pending.reason
    assert ".;" not in pending.reason


def test_7b_across_two_single_gpu_workers_over_ray():
    model = QWEN_32B.replace("Qwen/Qwen2.5-32B-Instruct", "org/seven-b")
    seven = safetensors("hf:org/seven-b", 14.2, heads=28)  # 19.04 GiB needed, 14.4 GiB per 16 GiB GPU
    observed = ObservedState.of([worker("w1", gpus=[16]), worker("w2", gpus=[16])])
    result = run(desired(model), observed, facts(seven))
    by_role = {a.instance.role: a for a in creates(result)}
    assert set(by_role) == {"main", "ray-head", "ray-worker"}
    main = by_role["main"].instance
    assert main.argv[main.argv.index("--pipeline-parallel-size") + 1] == "2"
    assert "--distributed-executor-backend" in main.argv
    assert by_role["ray-worker"].worker != by_role["main"].worker
    head = by_role["ray-head"].instance
    assert by_role["ray-worker"].instance.argv[-3].endswith(f":{head.port}")


def test_manual_gpu_selector_forces_two_workers():
    model = QWEN_32B.replace("Qwen/Qwen2.5-32B-Instruct", "meta-llama/Llama-3.1-8B-Instruct") + (
        '  scheduling: {mode: manual, gpuSelector: ["w1:0", "w2:0"], gpusPerReplica: 2}\n'
    )
    observed = ObservedState.of([worker("w1", gpus=[80]), worker("w2", gpus=[80]), worker("w3", gpus=[80])])
    result = run(desired(model), observed)
    assert sorted(a.worker for a in creates(result) if a.instance.role != "ray-head") == ["w1", "w2"]


def test_manual_gpu_selector_honoured_on_one_worker():
    model = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: pinned}
spec:
  source: {huggingface: {repo: meta-llama/Llama-3.1-8B-Instruct}}
  backend: sglang
  scheduling: {mode: manual, gpuSelector: ["h100-b:6", "h100-b:7"], gpusPerReplica: 2}
"""
    [create] = creates(run(desired(model), snapshot("2x8xh100.yaml")))
    assert (create.worker, create.instance.gpus) == ("h100-b", [6, 7])
    assert create.instance.env["CUDA_VISIBLE_DEVICES"] == "6,7"
    assert create.instance.argv[create.instance.argv.index("--tp-size") + 1] == "2"


SMALL = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: small}
spec:
  source: {huggingface: {repo: meta-llama/Llama-3.1-8B-Instruct}}
  backend: vllm
  scheduling: {placement: PLACEMENT}
"""


GGUF = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: mistral}
spec:
  source: {huggingface: {repo: bartowski/Mistral-7B-Instruct-v0.3-GGUF, file: "*Q4_K_M.gguf"}}
  backend: llama-box
"""


GGUF_CPU = GGUF + "  cpuOffloading: true\n"


def test_binpack_and_spread_pick_different_workers():
    first = GGUF_CPU.replace("mistral", "first")
    observed = ObservedState.of([worker("a-idle", ram_gib=64), worker("z-busy", ram_gib=64)])
    only_busy = ObservedState.of([observed.workers[1]])
    observed = apply(run(desired(first), only_busy), observed)
    for placement, expected in (("spread", "a-idle"), ("binpack", "z-busy")):
        model = GGUF_CPU + f"  scheduling: {{placement: {placement}}}\n"
        result = run(desired(first + "---" + model), observed)
        assert [a.action for a in result.actions if a.instance.model == "first"] == ["keep"]
        assert [a.worker for a in creates(result)] == [expected], placement


def test_spread_puts_replicas_on_different_workers():
    model = SMALL.replace("PLACEMENT", "spread") + "  replicas: 3\n"
    observed = ObservedState.of([worker(n, gpus=[80]) for n in ("a", "b", "c")])
    assert sorted(a.worker for a in creates(run(desired(model), observed))) == ["a", "b", "c"]


def test_gguf_on_a_cpu_only_worker_with_cpu_offloading():
    observed = ObservedState.of([worker("cpu", ram_gib=64)])
    [create] = creates(run(desired(GGUF + "  cpuOffloading: true\n"), observed))
    assert create.instance.gpus == [] and create.instance.claim.vram == {}
    assert create.instance.argv[create.instance.argv.index("--gpu-layers") + 1] == "0"
    assert create.instance.claim.ram > 4 * 1024**3


def test_gguf_without_cpu_offloading_stays_pending_on_cpu():
    observed = ObservedState.of([worker("cpu", ram_gib=64)])
    [pending] = run(desired(GGUF + "  cpuOffloading: false\n"), observed).pending
    assert "cpuOffloading is off" in pending.reason and "GiB VRAM" in pending.reason


def test_gguf_partial_offload_on_a_small_gpu():
    observed = ObservedState.of([worker("small", ram_gib=64, gpus=[6])])
    [create] = creates(run(desired(GGUF), observed))
    layers = int(create.instance.argv[create.instance.argv.index("--gpu-layers") + 1])
    assert 0 < layers < 33
    assert create.instance.claim.vram[0] <= 5 * 1024**3


def test_gguf_full_offload_on_one_gpu():
    observed = ObservedState.of([worker("big", gpus=[24])])
    [create] = creates(run(desired(GGUF), observed))
    assert create.instance.argv[create.instance.argv.index("--gpu-layers") + 1] == "33"


def test_gguf_split_over_two_gpus_of_one_worker():
    observed = ObservedState.of([worker("two", gpus=[5, 5])])
    model = GGUF + "  cpuOffloading: false\n"
    [create] = creates(run(desired(model), observed))
    assert create.instance.gpus == [0, 1]
    assert "--tensor-split" in create.instance.argv


def test_gguf_over_rpc_across_workers():
    model = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: llama-70b}
spec:
  source: {huggingface: {repo: bartowski/Llama-3.3-70B-Instruct-GGUF, file: "*Q4_K_M.gguf"}}
  backend: llama-box
  cpuOffloading: false
  backendParameters: ["--ctx-size 4096"]
"""
    observed = ObservedState.of([worker(f"desk-{i}", gpus=[24]) for i in (1, 2, 3)])
    result = run(desired(model), observed)
    roles = sorted(a.instance.role for a in creates(result))
    assert roles.count("rpc-server") >= 1 and roles.count("main") == 1
    main = next(a.instance for a in creates(result) if a.instance.role == "main")
    assert "--rpc" in main.argv and "--tensor-split" in main.argv


def test_not_ready_worker_and_labels_are_named():
    model = SMALL.replace("PLACEMENT", "spread") + "  scheduling: {matchLabels: {zone: a}}\n"
    model = model.replace("  scheduling: {placement: spread}\n", "")
    observed = ObservedState.of(
        [
            worker("down", gpus=[80], state="NotReady", labels={"zone": "a"}),
            worker("elsewhere", gpus=[80], labels={"zone": "b"}),
        ]
    )
    [pending] = run(desired(model), observed).pending
    assert "down: worker is NotReady" in pending.reason
    assert "elsewhere: label zone=a not matched (has b)" in pending.reason


def test_quickstart_on_the_cpu_snapshot():
    from reconciler.spec import load_desired
    from tests.conftest import ROOT

    result = run(load_desired(ROOT / "examples" / "quickstart"), snapshot("cpu-only.yaml"))
    create, chat = result.actions  # Gemma, and SmolLM2 behind the chat route
    assert chat.instance.model == "smollm2-135m" and "--chat_format" not in chat.instance.argv
    assert create.action == "create" and create.worker == "local"
    assert create.instance.argv[:3] == ["python3", "-m", "llama_cpp.server"]
    assert create.instance.argv[-2:] == ["--chat_format", "gemma"]
    assert create.instance.port == 40000


def test_rpc_level_names_its_best_combination():
    model = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: llama-70b}
spec:
  source: {huggingface: {repo: bartowski/Llama-3.3-70B-Instruct-GGUF, file: "*Q4_K_M.gguf"}}
  backend: llama-box
  cpuOffloading: false
"""
    observed = ObservedState.of([worker(f"desk-{i}", gpus=[16]) for i in (1, 2, 3)])
    [pending] = run(desired(model), observed).pending
    assert "over RPC, workers desk-1, desk-2, desk-3 together provide 45.00 GiB allocatable VRAM" in pending.reason
    assert "cpuOffloading is off" in pending.reason


def test_equal_workers_tie_to_the_first_name():
    observed = ObservedState.of([worker(n, gpus=[80]) for n in ("c", "a", "b")])
    [create] = creates(run(desired(SMALL.replace("PLACEMENT", "spread")), observed))
    assert create.worker == "a"
    [create] = creates(run(desired(SMALL.replace("PLACEMENT", "binpack")), observed))
    assert create.worker == "a"


def test_per_worker_reserved_ram_keeps_the_cluster_vram():
    cluster = """
apiVersion: reconciler/v1
kind: Cluster
metadata: {name: test}
spec:
  reserved: {ramGiB: 2, vramGiB: 1}
  agents: [{name: a-small, url: "http://10.0.0.9:10150", reserved: {ramGiB: 60}}]
"""
    observed = ObservedState.of([worker("a-small", ram_gib=64), worker("b-big", ram_gib=64)])
    model = GGUF_CPU.replace("mistral", "m")
    [create] = creates(run(desired(model, cluster), observed))
    assert create.worker == "b-big"  # a-small keeps 60 of its 64 GiB back
    with_gpu = ObservedState.of([worker("a-small", ram_gib=64, gpus=[8])])
    [create] = creates(run(desired(GGUF.replace("mistral", "m") + "  cpuOffloading: false\n", cluster), with_gpu))
    assert create.instance.gpus == [0]  # 7 GiB allocatable: the cluster's 1 GiB VRAM reservation still applies
