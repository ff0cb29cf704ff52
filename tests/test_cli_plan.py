"""reconcile plan as users and CI call it."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from reconciler.cli import app
from tests.conftest import ROOT

runner = CliRunner()
QUICKSTART = str(ROOT / "examples" / "quickstart")
CPU = str(ROOT / "examples" / "snapshots" / "cpu-only.yaml")


def test_quickstart_plan_in_a_real_process():
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "plan", QUICKSTART, "--dry-run", "--observed", CPU],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "+ create gemma-3-270m-0 on local" in done.stdout
    assert "python3 -m llama_cpp.server --model /tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf" in done.stdout


def test_detailed_exitcode():
    result = runner.invoke(app, ["plan", QUICKSTART, "--dry-run", "--observed", CPU, "--detailed-exitcode"])
    assert result.exit_code == 2


def test_json_and_markdown():
    result = runner.invoke(app, ["plan", QUICKSTART, "--observed", CPU, "--output", "json"])
    assert json.loads(result.stdout)["summary"]["create"] == 2
    result = runner.invoke(app, ["plan", QUICKSTART, "--observed", CPU, "--output", "markdown"])
    assert result.stdout.startswith("### reconcile plan")


def test_catalog_option():
    result = runner.invoke(
        app,
        [
            "plan",
            str(ROOT / "manifests"),
            "--observed",
            str(ROOT / "examples" / "snapshots" / "2x8xh100.yaml"),
            "--catalog",
            str(ROOT / "examples" / "snapshots" / "catalog.yaml"),
            "-o",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["create"] == 5


def test_invalid_manifests_exit_1(tmp_path):
    (tmp_path / "m.yaml").write_text("apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: m}\nspec: {}\n")
    result = runner.invoke(app, ["plan", str(tmp_path), "--observed", CPU])
    assert result.exit_code == 1
    assert f"{tmp_path / 'm.yaml'}:4:7: Model/m: spec.source: required field is missing" in result.stderr


def test_broken_snapshot_exit_1(tmp_path):
    snap = tmp_path / "s.yaml"
    snap.write_text("- name: w\n  memoryTotal: lots\n")
    result = runner.invoke(app, ["plan", QUICKSTART, "--observed", str(snap)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{snap}:2:16: snapshot: [0].memoryTotal:")
    assert "Traceback" not in result.output


def test_unreachable_agents_leave_the_model_pending(tmp_path):
    (tmp_path / "cluster.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: c}\n"
        "spec: {agents: [{name: gone, url: 'http://127.0.0.1:9'}]}\n"
    )
    (tmp_path / "m.yaml").write_text((ROOT / "examples" / "quickstart" / "gemma.yaml").read_text())
    result = runner.invoke(app, ["plan", str(tmp_path), "-o", "json"])
    assert result.exit_code == 0, result.output
    [pending] = json.loads(result.stdout)["pending"]
    assert "gone: worker is Unreachable" in pending["reason"] or "metadata" in pending["reason"]
