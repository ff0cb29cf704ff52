"""`reconcile plan` against URLs a pull request chose: no credential leaves, nothing hangs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.hostile_http import hostile

CLUSTER = """\
apiVersion: reconciler/v1
kind: Cluster
metadata: {{name: pr}}
spec:
  agents: [{{name: w, url: "{url}"}}]
  huggingface: {{endpoint: "{url}"}}
---
apiVersion: reconciler/v1
kind: Model
metadata: {{name: m}}
spec:
  source: {{huggingface: {{repo: org/model}}}}
"""


def plan(tmp_path: Path, url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "all.yaml").write_text(CLUSTER.format(url=url))
    env = {
        **os.environ,
        "HF_TOKEN": "hf-secret",
        "RECONCILER_TOKEN": "agent-secret",
        "RECONCILER_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("HF_ENDPOINT", None)
    env.pop("RECONCILER_AGENTS", None)
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "plan", str(tmp_path / "repo"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_token_goes_to_urls_from_the_manifest(tmp_path: Path) -> None:
    with hostile("record") as (url, seen):
        done = plan(tmp_path, url)
    assert done.returncode == 0, done.stderr
    assert any("/v1/state" in r for r in seen.requests) and any("/api/models/org/model" in r for r in seen.requests)
    assert seen.authorization() == []
    assert "is not named by --agent or RECONCILER_AGENTS; asked without the token" in done.stderr


def test_an_agent_named_on_the_command_line_gets_the_token(tmp_path: Path) -> None:
    with hostile("record") as (url, seen):
        done = plan(tmp_path, url, "--agent", url + "/")
    assert done.returncode == 0, done.stderr
    state = [r for r in seen.requests if "/v1/state" in r]
    assert state and all("Authorization: Bearer agent-secret" in r for r in state)
    assert not any("hf-secret" in r for r in seen.requests), "the manifest's hub endpoint gets no HF_TOKEN"


def test_a_trickling_agent_and_hub_end_at_the_deadline(tmp_path: Path) -> None:
    with hostile("trickle-body", pause=2) as (url, _):
        done = plan(tmp_path, url)
    assert done.returncode == 0, done.stderr
    assert "! m replica 0:" in done.stdout and "no complete answer within 10 s" in done.stdout
