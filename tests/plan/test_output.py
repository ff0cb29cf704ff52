"""Plan output: text like terraform, JSON in DESIGN.md's shape, Markdown for a PR."""

from __future__ import annotations

import json

from reconciler.plan import to_json, to_markdown, to_text
from reconciler.spec import load_desired
from tests.conftest import ROOT
from tests.plan.helpers import apply, run, snapshot


def quickstart():
    return load_desired(ROOT / "examples" / "quickstart")


def test_text_output():
    text = to_text(run(quickstart(), snapshot("cpu-only.yaml")))
    assert "  + create gemma-3-270m-0 on local\n" in text
    assert "      argv:   python3 -m llama_cpp.server --model /tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf" in text
    assert "      how:    cpu 0/19 layers\n" in text
    assert "  + create smollm2-135m-0 on local\n" in text
    assert text.endswith("Plan: 2 to create, 0 to replace, 0 to delete.\n")


def test_json_shape():
    body = json.loads(to_json(run(quickstart(), snapshot("cpu-only.yaml"))))
    assert set(body) == {"revision", "summary", "actions", "pending", "rollouts"}
    assert body["summary"] == {"create": 2, "replace": 0, "delete": 0, "keep": 0, "pending": 0}
    action = next(a for a in body["actions"] if a["model"] == "gemma-3-270m")
    assert set(action) == {
        "action",
        "instance",
        "model",
        "worker",
        "gpus",
        "argv",
        "env",
        "port",
        "claim",
        "reason",
        "strategy",
        "tensorParallel",
        "pipelineParallel",
        "offloadLayers",
        "totalLayers",
        "surge",
        "step",
        "of",
        "role",
        "modelHash",
        "specHash",
    }
    assert (action["strategy"], action["tensorParallel"], action["pipelineParallel"]) == ("cpu", 1, 1)
    assert (action["offloadLayers"], action["totalLayers"], action["role"]) == (0, 19, "main")
    assert len(action["modelHash"]) == 16 and action["specHash"]
    assert (action["action"], action["instance"], action["worker"], action["port"]) == (
        "create",
        "gemma-3-270m-0",
        "local",
        40000,
    )
    assert action["claim"]["ram"] > 400 * 1024**2 and action["claim"]["vram"] == {}


def test_no_changes_after_apply_and_replace_on_change(tmp_path):
    observed = snapshot("cpu-only.yaml")
    after = apply(run(quickstart(), observed), observed)
    unchanged = run(quickstart(), after)
    assert "No changes. 2 instances up to date." in to_text(unchanged)
    folder = tmp_path / "q"
    folder.mkdir()
    for file in (ROOT / "examples" / "quickstart").iterdir():
        (folder / file.name).write_text(file.read_text())
    model = folder / "gemma.yaml"
    model.write_text(model.read_text() + "  backendParameters: [--n_ctx=4096]\n")
    changed = run(load_desired(folder), after)
    [action] = [a for a in changed.actions if a.action != "keep"]
    assert (action.action, action.reason) == ("replace", "the model's spec changed")
    assert action.instance.port == 40000  # an instance replaced in place keeps its port
    assert "  ~ replace gemma-3-270m-0 on local" in to_text(changed)
    model.write_text(model.read_text().replace("replicas: 1", "replicas: 0"))
    stopped = run(load_desired(folder), after)
    assert [(a.action, a.reason) for a in stopped.actions if a.action != "keep"] == [
        ("delete", "scaled down to 0 replicas")
    ]


def test_markdown():
    text = to_markdown(run(quickstart(), snapshot("cpu-only.yaml")))
    assert "**Plan: 2 to create, 0 to replace, 0 to delete.**" in text
    assert "| `+` create | ` gemma-3-270m-0 ` | ` local ` | - | ` cpu 0/19 layers ` |" in text
    assert "<details><summary>Command lines</summary>" in text
