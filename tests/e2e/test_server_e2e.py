"""The GitOps server end to end: a bare git repo on disk, `reconcile serve` as a process,
agents on loopback (simulated ones for placement, a real `reconcile agent` for processes),
and `reconcile up` / `down` with the real Gemma model."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bench.simulated import SimulatedAgents
from tests.net import free_port

pytestmark = pytest.mark.e2e
SECRET = "webhook-secret"
AGENT_TOKEN = "agent-token"
WEB = """\
apiVersion: reconciler/v1
kind: Model
metadata: {{name: web}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: {replicas}
  custom: {{command: "{command}", healthPath: /}}
"""
HTTP_SERVER = f"{sys.executable} -m http.server {{{{ port }}}} --bind 127.0.0.1"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}")


class GitOps:
    """A bare origin, a working clone to push from, and `reconcile serve` following origin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.origin = root / "origin.git"
        self.work = root / "work"
        self.data = root / "server"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen[bytes] | None = None
        git(root, "init", "-q", "--bare", "-b", "main", str(self.origin))
        git(root, "clone", "-q", str(self.origin), str(self.work))
        git(self.work, "checkout", "-q", "-b", "main")
        (root / "secret").write_text(SECRET)

    def push(self, files: dict[str, str | None], message: str) -> str:
        for name, text in files.items():
            if text is None:
                (self.work / name).unlink()
            else:
                (self.work / name).write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")

    def start(self, worker_poll: float = 0.5, *extra: str) -> None:
        with (self.root / "server.log").open("ab") as log:
            self.server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler.cli",
                    "serve",
                    f"file://{self.origin}",
                    "--data-dir",
                    str(self.data),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--webhook-secret-file",
                    str(self.root / "secret"),
                    "--worker-poll",
                    str(worker_poll),
                    *extra,
                ],
                env={**os.environ, "RECONCILER_TOKEN": AGENT_TOKEN, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: (self.data / "server.json").exists(), 60, "server.json")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=30)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(self.data / 'token').read_text().strip()}"}

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/status", headers=self.headers(), timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def webhook(self, body: bytes, headers: dict[str, str]) -> int:
        return httpx.post(f"{self.url}/api/webhook/git", content=body, headers=headers, timeout=10).status_code

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *args, "--data-dir", str(self.data)],
            capture_output=True,
            text=True,
            timeout=60,
        )


def cluster(agents: dict[str, str], interval: str = "1h", grace: int = 300, ports: str = "43100-43119") -> str:
    listed = ", ".join(f"{{name: {name}, url: '{url}'}}" for name, url in agents.items())
    return (
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: e2e}\nspec:\n"
        f"  agents: [{listed}]\n  portRange: '{ports}'\n"
        f"  reschedule: {{gracePeriodSeconds: {grace}}}\n  sync: {{interval: {interval}}}\n"
    )


def github(body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}


@pytest.fixture
def sim() -> Iterator[SimulatedAgents]:
    agents = SimulatedAgents(["a", "b"]).start()
    yield agents
    agents.stop()


@pytest.fixture
def gitops(tmp_path: Path) -> Iterator[GitOps]:
    setup = GitOps(tmp_path)
    yield setup
    setup.stop()


def ids(agents: SimulatedAgents) -> dict[str, list[str]]:
    return {name: sorted(i["id"] for i in a.instances) for name, a in agents.agents.items()}


def test_webhook_invalid_commit_empty_guard_and_restart(sim: SimulatedAgents, gitops: GitOps) -> None:
    first = gitops.push(
        {"cluster.yaml": cluster({n: sim.url(n) for n in sim.agents}), "web.yaml": WEB.format(replicas=1, command="x")},
        "one",
    )
    gitops.start()
    wait_for(lambda: gitops.status()["revision"] == first, what="the first revision applied")
    assert sum(len(v) for v in ids(sim).values()) == 1

    second = gitops.push({"web.yaml": WEB.format(replicas=2, command="x")}, "two replicas")
    body = json.dumps({"ref": "refs/heads/main", "after": second}).encode()
    assert gitops.webhook(body, {}) == 401
    assert gitops.webhook(body, {"X-Hub-Signature-256": "sha256=" + "0" * 64}) == 401
    assert gitops.webhook(body, {"X-Gitlab-Token": "wrong"}) == 401
    time.sleep(1.5)  # several passes: none may fetch, the interval is an hour
    assert gitops.status()["revision"] == first
    assert "webhook from 127.0.0.1 refused" in (gitops.root / "server.log").read_text()
    assert gitops.webhook(body, github(body)) == 200
    wait_for(lambda: gitops.status()["revision"] == second, what="the webhook's revision")
    assert sorted(i for v in ids(sim).values() for i in v) == ["web-0", "web-1"]

    before = ids(sim)
    gitops.push({"web.yaml": WEB.format(replicas="two", command="x")}, "broken")
    assert gitops.webhook(b"{}", {"X-Gitlab-Token": SECRET}) == 200
    error = wait_for(lambda: gitops.status()["error"], what="the invalid revision's error")
    assert error["reason"] == "Invalid"
    assert error["diagnostics"][0]["file"] == "web.yaml" and error["diagnostics"][0]["line"] == 7
    assert "web.yaml:7:" in error["message"]
    assert gitops.status()["revision"] == second and ids(sim) == before

    fixed = gitops.push({"web.yaml": WEB.format(replicas=2, command="x --fixed")}, "fixed")
    body = b'{"ref": "refs/heads/main"}'
    gitops.webhook(body, {"X-Gitea-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()})
    wait_for(lambda: gitops.status()["revision"] == fixed and not gitops.status()["error"], what="the fix")
    wait_for(
        lambda: (
            sorted(i for v in ids(sim).values() for i in v) == ["web-0", "web-1"]
            and gitops.status()["models"][0]["rollout"] is None
        ),
        what="the fix rolled out (its surge replica gone)",
    )

    gitops.push({"web.yaml": None}, "delete every model")
    gitops.webhook(body, github(body))
    refused = wait_for(lambda: gitops.status()["error"], what="the refusal")
    assert refused["reason"] == "Refused" and "allowEmpty" in refused["message"]
    assert gitops.status()["revision"] == fixed and sum(len(v) for v in ids(sim).values()) == 2

    restored = gitops.push({"web.yaml": WEB.format(replicas=2, command="x --fixed")}, "restore")
    gitops.webhook(body, github(body))
    wait_for(lambda: gitops.status()["revision"] == restored, what="the restored revision")
    puts = {name: len(a.puts) for name, a in sim.agents.items()}
    gitops.stop()
    gitops.start()
    passes = wait_for(lambda: gitops.status()["lastPass"]["outcome"] == "UpToDate", what="a pass after restart")
    assert passes
    time.sleep(1.5)
    # Each agent gets its set once more, unchanged, under the restarted leader's epoch (fencing).
    assert {name: len(a.puts) for name, a in sim.agents.items()} == {n: c + 1 for n, c in puts.items()}
    assert all(a.puts[-1][1] == a.puts[-2][1] for a in sim.agents.values())

    gitops.push({"web.yaml": WEB.format(replicas="two", command="x")}, "broken again")
    gitops.webhook(body, github(body))
    wait_for(lambda: gitops.status()["error"], what="the second invalid revision")
    gitops.stop()
    gitops.start()  # onto a bad head: the applied revision is loaded and kept
    resumed = wait_for(
        lambda: (s := gitops.status())["error"] and s["models"] and s, what="status after a restart on a bad head"
    )
    assert resumed["revision"] == restored and resumed["models"][0]["desired"] == 2
    assert resumed["error"]["reason"] == "Invalid"
    time.sleep(1.5)
    assert {name: len(a.puts) for name, a in sim.agents.items()} == {n: c + 2 for n, c in puts.items()}

    history = gitops.cli("history")
    assert history.returncode == 0 and "Invalid" in history.stdout and "Refused" in history.stdout
    events = gitops.cli("events")
    assert "Applied" in events.stdout
    metrics = httpx.get(f"{gitops.url}/metrics").text
    assert 'reconciler_workers{state="Ready"} 2.0' in metrics
    assert "reconciler_reconcile_passes_total" in metrics


def test_lost_worker_is_replaced_after_grace_and_its_stale_copy_stopped(sim: SimulatedAgents, gitops: GitOps) -> None:
    gitops.push(
        {
            "cluster.yaml": cluster({n: sim.url(n) for n in sim.agents}, interval="2s", grace=3),
            "web.yaml": WEB.format(replicas=1, command="x"),
        },
        "one",
    )
    gitops.start()
    home = wait_for(lambda: next((n for n, v in ids(sim).items() if v), None), what="a placement")
    other = "b" if home == "a" else "a"
    wait_for(
        lambda: [(i["worker"], i["state"]) for i in gitops.status()["instances"]] == [(home, "Running")],
        what="the server seeing the instance Running",
    )
    sim.agents[home].down = True
    wait_for(
        lambda: [i["state"] for i in gitops.status()["instances"]] == ["Unreachable"],
        what="the instance shown Unreachable",
    )
    assert next(w for w in gitops.status()["workers"] if w["name"] == home)["state"] == "Unreachable"
    assert ids(sim)[other] == []  # within the grace period nothing moves
    wait_for(lambda: ids(sim)[other] == ["web-0"], what="the re-placement after the grace period")
    sim.agents[home].down = False
    wait_for(lambda: ids(sim)[home] == [], what="the stale copy stopped")
    assert ids(sim)[other] == ["web-0"]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    (tmp_path / "agent-token").write_text(AGENT_TOKEN)
    with (tmp_path / "agent.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler.cli",
                "agent",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--data-dir",
                str(tmp_path / "agent"),
                "--worker-name",
                "local",
                "--worker-ip",
                "127.0.0.1",
                "--token-file",
                str(tmp_path / "agent-token"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _healthy(url), what="the agent")
    yield url
    headers = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    httpx.put(f"{url}/v1/instances", json={"generation": time.time_ns(), "instances": []}, headers=headers)
    wait_for(lambda: not httpx.get(f"{url}/v1/state", headers=headers).json()["instances"], what="instances stopped")
    process.terminate()
    process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_spec_change_replaces_replicas_one_at_a_time(agent: str, gitops: GitOps) -> None:
    low = 44000 + free_port() % 1000
    gitops.push(
        {
            "cluster.yaml": cluster({"local": agent}, interval="1s", ports=f"{low}-{low + 9}"),
            "web.yaml": WEB.format(replicas=2, command=HTTP_SERVER),
        },
        "two web servers",
    )
    gitops.start()

    def running() -> dict[str, int]:
        return {i["id"]: i["pid"] for i in gitops.status()["instances"] if i["state"] == "Running"}

    old = wait_for(lambda: (r := running()) and len(r) == 2 and r, what="two Running replicas")
    gitops.push({"web.yaml": WEB.format(replicas=2, command=HTTP_SERVER + " --directory /tmp")}, "change")
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = running()
        seen.append(now)
        assert now, "no replica Running during the rollout"
        if set(now) == {"web-0", "web-1"} and not set(now.values()) & set(old.values()):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the rollout did not finish: {seen[-1]}")
    # One at a time: some snapshot had new and old replicas both Running; and a surge
    # replica (web-2) served while the two were replaced, gone once the rollout ended.
    assert any(set(s.values()) & set(old.values()) and set(s.values()) - set(old.values()) for s in seen)
    assert any("web-2" in s for s in seen)
    assert all(len(s) >= 2 for s in seen[seen.index(next(s for s in seen if "web-2" in s)) :])
    logs = gitops.cli("logs", "web-0", "--tail", "5")
    assert logs.returncode == 0, logs.stderr
    text = gitops.cli("status")
    assert text.returncode == 0 and "web-1" in text.stdout and "Running" in text.stdout, text.stderr
    files = gitops.cli("files")
    assert files.returncode == 0, files.stderr
    missing = gitops.cli("logs", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_up_serves_gemma_and_down_stops_everything(tmp_path: Path, smollm2: Path) -> None:
    data = tmp_path / "up"
    ports = ["--port", str(free_port()), "--agent-port", str(free_port()), "--router-port", str(free_port())]
    env = {**os.environ, "RECONCILER_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # up records the current cluster there

    def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    up = cli("up", *ports, timeout=900)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "/v1/chat/completions" in up.stdout and "git -C" in up.stdout
    status = json.loads(cli("status", "-o", "json").stdout)
    assert sorted(i["model"] for i in status["instances"]) == ["gemma-3-270m", "smollm2-135m"]
    assert all(i["state"] == "Running" and i["pid"] for i in status["instances"])
    instance = next(i for i in status["instances"] if i["model"] == "gemma-3-270m")
    assert status["revision"] == git(data / "repo", "rev-parse", "HEAD")
    assert "routerUrl" in status
    # The printed commands work as printed in a new shell: no data dir, only the current cluster.
    fresh = {k: v for k, v in env.items() if k != "RECONCILER_DATA_DIR"}
    for command in ("status", "usage"):
        line = next(x.split()[:2] for x in up.stdout.splitlines() if x.split()[1:2] == [command])
        done = subprocess.run(line, env=fresh, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    question = [{"role": "user", "content": "Name the capital of France."}]
    answer = httpx.post(
        f"{status['routerUrl']}/v1/chat/completions",
        json={"model": "chat", "temperature": 0, "messages": question},
        timeout=120,
    )
    assert answer.json()["choices"][0]["message"]["content"] == "The capital of France is Paris."

    again = cli("up", *ports, timeout=300)
    assert again.returncode == 0 and "already runs" in again.stdout
    assert instance["pid"] in [i["pid"] for i in json.loads(cli("status", "-o", "json").stdout)["instances"]]

    model = data / "repo" / "gemma.yaml"
    model.write_text(model.read_text().replace("replicas: 1", "replicas: many"))
    git(data / "repo", "commit", "-qam", "broken")
    error = wait_for(lambda: json.loads(cli("status", "-o", "json").stdout)["error"], what="the error")
    assert "gemma.yaml:" in error["message"]
    assert instance["pid"] in [i["pid"] for i in json.loads(cli("status", "-o", "json").stdout)["instances"]]

    pids = [json.loads((data / f).read_text())["pid"] for f in ("server.json", "agent.json", "router.json")]
    down = cli("down", timeout=120)
    assert down.returncode == 0, down.stderr
    for pid in [*pids, instance["pid"]]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
