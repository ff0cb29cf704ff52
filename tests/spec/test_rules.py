"""Every semantic rule: one failing case with its exact line and column, one passing case."""

from __future__ import annotations

import pytest

MODEL = """
apiVersion: reconciler/v1
kind: Model
metadata:
  name: m
spec:
  source:
    localPath: /models/m.gguf
{extra}
"""


def model(extra: str) -> str:
    return MODEL.format(extra=extra)


def only(errors, text):
    found = errors(text)
    assert len(found) == 1, [str(d) for d in found]
    return found[0]


def test_valid_model_has_no_errors(errors):
    assert errors(model("  replicas: 2")) == []


def test_duplicate_model_names(errors):
    text = model("") + "---" + model("")
    found = only(errors, text)
    assert (found.line, found.col) == (13, 9)
    assert found.resource == "Model/m" and found.field == "metadata.name"
    assert "duplicate Model name 'm'" in found.message and ":4" in found.message


def test_same_name_in_different_kinds_is_fine(errors):
    selector = "apiVersion: reconciler/v1\nkind: WorkerSelector\nmetadata: {name: m}\n"
    assert errors(model("") + "---\n" + selector) == []


def test_worker_selector_must_resolve(errors):
    found = only(errors, model("  scheduling:\n    workerSelector: gpus"))
    assert (found.line, found.col, found.field) == (9, 21, "spec.scheduling.workerSelector")
    assert "no WorkerSelector named 'gpus'" in found.message


def test_worker_selector_resolves(errors):
    selector = "---\napiVersion: reconciler/v1\nkind: WorkerSelector\nmetadata: {name: gpus}\n"
    assert errors(model("  scheduling:\n    workerSelector: gpus") + selector) == []


def test_source_required(errors):
    text = "apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: m}\nspec:\n  source: {}\n"
    found = only(errors, text)
    assert (found.line, found.col, found.field) == (5, 3, "spec.source")
    assert "exactly one of huggingface, modelscope, localPath" in found.message


def test_only_one_source(errors):
    found = only(errors, model("").replace("    localPath", "    huggingface: {repo: a/b}\n    localPath"))
    assert (found.line, found.col, found.field) == (8, 16, "spec.source.localPath")
    assert "found huggingface, localPath" in found.message


def test_local_path_must_be_absolute(errors):
    found = only(errors, model("").replace("/models/m.gguf", "models/m.gguf"))
    assert (found.line, found.col, found.field) == (7, 16, "spec.source.localPath")
    assert "absolute" in found.message


@pytest.mark.parametrize("path", ["/models/m.gguf", "C:\\\\models\\\\m.gguf"])
def test_absolute_paths_pass(errors, path):
    assert errors(model("").replace("/models/m.gguf", f'"{path}"')) == []


def test_gpu_selector_form(errors):
    found = only(errors, model('  scheduling:\n    gpuSelector: ["w-1:0", "w-1"]'))
    assert (found.line, found.col, found.field) == (9, 28, "spec.scheduling.gpuSelector[1]")
    assert "worker:index" in found.message


def test_gpu_selector_duplicates(errors):
    found = only(errors, model('  scheduling:\n    gpuSelector: ["w:0", "w:0"]'))
    assert found.field == "spec.scheduling.gpuSelector[1]" and "twice" in found.message


def test_gpu_selector_passes(errors):
    assert errors(model('  scheduling:\n    mode: manual\n    gpuSelector: ["w-1:0", "w.lan:12"]')) == []


def test_manual_mode_needs_gpus(errors):
    found = only(errors, model("  scheduling:\n    mode: manual"))
    assert (found.line, found.col, found.field) == (9, 5, "spec.scheduling.gpuSelector")


def test_gpus_per_replica_within_selector(errors):
    found = only(errors, model('  scheduling:\n    gpuSelector: ["w:0"]\n    gpusPerReplica: 2'))
    assert (found.line, found.col, found.field) == (10, 21, "spec.scheduling.gpusPerReplica")


def test_custom_backend_requires_command(errors):
    found = only(errors, model("  backend: custom"))
    assert (found.line, found.col, found.field) == (6, 3, "spec.custom")
    assert "custom.command" in found.message


def test_custom_backend_passes(errors):
    assert errors(model('  backend: custom\n  custom: {command: "my-server --port {{ port }}"}')) == []


def test_custom_command_template_error(errors):
    found = only(errors, model('  backend: custom\n  custom: {command: "srv --port {{ port"}'))
    assert (found.line, found.col, found.field) == (9, 21, "spec.custom.command")


def test_custom_without_custom_backend(errors):
    found = only(errors, model('  backend: vllm\n  custom: {command: "srv"}'))
    assert (found.line, found.col, found.field) == (9, 3, "spec.custom")


@pytest.mark.parametrize("backend", ["vllm", "mindie"])
def test_cpu_offloading_refused(errors, backend):
    found = only(errors, model(f"  backend: {backend}\n  cpuOffloading: true"))
    assert (found.line, found.col, found.field) == (9, 18, "spec.cpuOffloading")
    assert f"backend {backend} does not support cpuOffloading" == found.message


@pytest.mark.parametrize("backend", ["llama-box", "llama-cpp", "sglang"])
def test_cpu_offloading_allowed(errors, backend):
    assert errors(model(f"  backend: {backend}\n  cpuOffloading: true")) == []


def test_vox_box_refuses_distributed(errors):
    found = only(errors, model("  backend: vox-box\n  distributedInference: true"))
    assert (found.line, found.col, found.field) == (9, 25, "spec.distributedInference")


def test_vox_box_without_distributed_passes(errors):
    assert errors(model("  backend: vox-box\n  distributedInference: false")) == []


@pytest.mark.parametrize(
    "name",
    [
        "CUDA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "ASCEND_RT_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "MLU_VISIBLE_DEVICES",
        "RECONCILER_PORT",
    ],
)
def test_protected_env_refused(errors, name):
    found = only(errors, model(f'  env:\n    {name}: "0"'))
    assert (found.line, found.col, found.field) == (9, 5 + len(name) + 2, f"spec.env.{name}")


def test_other_env_passes(errors):
    assert errors(model('  env:\n    HF_HUB_OFFLINE: "1"')) == []


def test_backend_parameters_all_three_forms_pass(errors):
    text = model(
        '  backendParameters:\n    - --ctx-size=4096\n    - "--alias \'a b\'"\n    - [--seed, "-1"]\n'
        '    - --threads\n    - "4"'
    )
    assert errors(text) == []


def test_unparsable_backend_parameter(errors):
    found = only(errors, model('  backendParameters:\n    - --ctx-size=4096\n    - "--alias \'a b"'))
    assert (found.line, found.col, found.field) == (10, 7, "spec.backendParameters[1]")
    assert "cannot split" in found.message


def test_backend_parameter_value_without_flag(errors):
    found = only(errors, model("  backendParameters:\n    - lonely"))
    assert found.field == "spec.backendParameters[0]" and "no flag before it" in found.message


def test_match_expression_values(errors):
    text = (
        "apiVersion: reconciler/v1\nkind: WorkerSelector\nmetadata: {name: s}\nspec:\n  matchExpressions:\n"
        "    - {key: gpu.vendor, operator: In}\n    - {key: os, operator: Exists, values: [linux]}\n"
    )
    found = errors(text)
    assert [(d.line, d.field) for d in found] == [
        (6, "spec.matchExpressions[0].values"),
        (7, "spec.matchExpressions[1].values"),
    ]


def test_one_cluster_per_state(errors):
    cluster = "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: %s}\n"
    found = only(errors, cluster % "a" + "---\n" + cluster % "b")
    assert (found.line, found.col, found.resource) == (6, 7, "Cluster/b") and "only one Cluster" in found.message


def test_duplicate_agents(errors):
    text = (
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  agents:\n"
        "    - {name: a, url: 'http://127.0.0.1:1'}\n    - {name: a, url: 'http://127.0.0.1:2'}\n"
    )
    found = only(errors, text)
    assert (found.line, found.field) == (7, "spec.agents[1].name")


def test_errors_are_all_collected(errors):
    text = model(
        "  backend: vllm\n  cpuOffloading: true\n  env:\n    CUDA_VISIBLE_DEVICES: '1'\n"
        "  scheduling:\n    workerSelector: nope"
    )
    assert len(errors(text)) == 3
