"""The reconcile CLI as users and CI call it."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from reconciler.cli import app
from tests.conftest import ROOT

runner = CliRunner()
BROKEN = "apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: m}\nspec:\n  source: {localPath: rel}\n  x: 1\n"


def test_examples_and_sample_repo_validate():
    # examples/ci holds CI pipelines (GitHub Actions, GitLab), not manifests.
    setups = [str(p) for p in sorted((ROOT / "examples").iterdir()) if p.is_dir() and p.name != "ci"]
    result = runner.invoke(app, ["validate", *setups, str(ROOT / "manifests")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid:")


def test_invalid_exits_1_with_one_line_per_error(write):
    path = write(BROKEN)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines == [
        f"{path}:6:3: Model/m: spec.x: unknown field (allowed: source, backend, backendVersion, replicas, "
        "maxSurge, maxUnavailable, category, scheduling, backendParameters, env, cpuOffloading, distributedInference, "
        "restartOnError, genericProxy, drainSeconds, extendedKVCache, custom, routing)"
    ]


def test_json_output(write):
    path = write(BROKEN)
    result = runner.invoke(app, ["validate", "--output", "json", str(path)])
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["valid"] is False
    assert body["errors"][0] == {
        "file": str(path),
        "line": 6,
        "column": 3,
        "resource": "Model/m",
        "field": "spec.x",
        "message": body["errors"][0]["message"],
    }


def test_github_annotations(write, monkeypatch):
    path = write(BROKEN)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = runner.invoke(app, ["validate", str(path)])
    assert f"::error file={path},line=6,col=3::" in result.stdout


def test_real_process_prints_no_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe\x00garbage: [\n")
    (tmp_path / "worse.yaml").write_text("a: &x [*x]\n")
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "validate", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert all(":" in line for line in done.stdout.splitlines())


def test_schemas_command_matches_committed(tmp_path):
    result = runner.invoke(app, ["schemas", "--out", str(tmp_path)])
    assert result.exit_code == 0
    for generated in tmp_path.iterdir():
        assert generated.read_text() == (ROOT / "schemas" / generated.name).read_text(), (
            f"schemas/{generated.name} is stale: run `reconcile schemas --out schemas/`"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (ROOT / "schemas").iterdir())


def test_example_manifests_declare_their_schema():
    manifests = [p for p in (ROOT / "examples").rglob("*.yaml") if "snapshots" not in p.parts]
    for path in [*manifests, *(ROOT / "manifests").rglob("*.yaml")]:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        schema = (path.parent / first.split("=", 1)[1]).resolve()
        assert schema.is_file(), f"{path} points at a missing schema {schema}"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "reconcile" in result.stdout
