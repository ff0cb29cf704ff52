"""`reconcile apply [--wait]` in a real process against simulated agents: one step, or every step."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.simulated import SimulatedAgents

MANIFESTS = """\
apiVersion: reconciler/v1
kind: Cluster
metadata: {{name: t}}
spec:
  agents: [{{name: a, url: "{url}"}}]
---
apiVersion: reconciler/v1
kind: Model
metadata: {{name: web}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: 2
  custom: {{command: "serve --port {{{{ port }}}} {flag}", healthPath: /}}
"""


@pytest.fixture
def sim() -> Iterator[SimulatedAgents]:
    agents = SimulatedAgents(["a"]).start()
    yield agents
    agents.stop()


def apply(tmp_path: Path, sim: SimulatedAgents, flag: str, *options: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "repo").mkdir(exist_ok=True)
    (tmp_path / "repo" / "all.yaml").write_text(MANIFESTS.format(url=sim.url("a"), flag=flag))
    env = {**os.environ, "RECONCILER_TOKEN": "t", "RECONCILER_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "apply", str(tmp_path / "repo"), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_apply_takes_one_step_and_wait_takes_them_all(tmp_path: Path, sim: SimulatedAgents) -> None:
    assert apply(tmp_path, sim, "--old").returncode == 0
    agent = sim.agents["a"]
    assert sorted(i["id"] for i in agent.instances) == ["web-0", "web-1"]
    one = apply(tmp_path, sim, "--new")
    assert one.returncode == 0, one.stderr
    assert "Rollout web: step 1 of 3: surge 1 new, keep 2 old" in one.stdout
    assert sorted(i["id"] for i in agent.instances) == ["web-0", "web-1", "web-2"]  # the surge only
    done = apply(tmp_path, sim, "--new", "--wait")
    assert done.returncode == 0, done.stderr
    assert "converged: 2 instances Running" in done.stdout
    sets = [ids for _, ids in agent.puts]
    assert sets[-3:] == [["web-0", "web-1", "web-2"], ["web-0", "web-1", "web-2"], ["web-0", "web-1"]]
    assert all("--new" in i["argv"] for i in agent.instances)


def test_wait_stops_on_a_new_instance_in_error(tmp_path: Path, sim: SimulatedAgents) -> None:
    assert apply(tmp_path, sim, "--old").returncode == 0
    sim.agents["a"].states["web-2"] = "Error"  # the surge replica fails once started
    stopped = apply(tmp_path, sim, "--broken", "--wait")
    assert stopped.returncode == 1
    assert "stopped: rollout stopped: new instance web-2 is in Error" in stopped.stderr
    assert all("--old" in i["argv"] for i in sim.agents["a"].instances if i["id"] != "web-2")
