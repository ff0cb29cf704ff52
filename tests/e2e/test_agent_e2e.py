"""End to end, all real: manifests folder, `reconcile apply`, the agent, a hub mirror,
llama.cpp's server with the Gemma 3 270M GGUF, and the openai client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.hub_mirror import hub_mirror
from tests.net import free_port

pytestmark = pytest.mark.e2e
TOKEN = "e2e-token"
MODEL = """\
apiVersion: reconciler/v1
kind: Model
metadata: {{name: gemma}}
spec:
  source:
    huggingface: {{repo: google/gemma-3-270m-GGUF, file: "*q4_k_m.gguf"}}
  backend: llama-cpp
  replicas: {replicas}
  backendParameters: [{params}]
"""
CRASHING = """\
apiVersion: reconciler/v1
kind: Model
metadata: {name: crasher}
spec:
  source: {localPath: /bin/sh}
  backend: custom
  custom: {command: "python3 -c 'import sys; print(\\"crashing now\\"); sys.exit(1)'"}
"""


class Cluster:
    def __init__(self, root: Path, mirror_url: str) -> None:
        self.root = root
        self.manifests = root / "manifests"
        self.data = root / "agent"
        self.token = root / "token"
        self.port = free_port()
        self.mirror_url = mirror_url
        self.agent: subprocess.Popen[bytes] | None = None
        self.manifests.mkdir()
        self.token.write_text(TOKEN)
        self.low = low = 42000 + (self.port % 200) * 20
        (self.manifests / "cluster.yaml").write_text(
            "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: e2e}\n"
            f"spec:\n  agents: [{{name: local, url: 'http://127.0.0.1:{self.port}'}}]\n"
            f"  portRange: '{low}-{low + 19}'\n  huggingface: {{endpoint: '{mirror_url}'}}\n"
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RECONCILER_TOKEN": TOKEN,
            "HF_ENDPOINT": self.mirror_url,
            "RECONCILER_CACHE_DIR": str(self.root / "reconciler-cache"),
            "PYTHONUNBUFFERED": "1",
        }

    def start_agent(self) -> None:
        with (self.root / "agent.log").open("ab") as log:
            self.agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler.cli",
                    "agent",
                    "--port",
                    str(self.port),
                    "--host",
                    "127.0.0.1",
                    "--data-dir",
                    str(self.data),
                    "--worker-name",
                    "local",
                    "--worker-ip",
                    "127.0.0.1",
                    "--token-file",
                    str(self.token),
                ],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError((self.root / "agent.log").read_text())

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(timeout=30)

    def apply(self, *flags: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", "apply", str(self.manifests), *flags],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def state(self) -> dict[str, dict[str, object]]:
        body = httpx.get(
            f"http://127.0.0.1:{self.port}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ).json()
        return {i["id"]: i for i in body["instances"]}

    def wait(self, instance: str, predicate, timeout: float = 240) -> dict[str, object]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        last: dict[str, object] | None = None
        while time.monotonic() < deadline:
            last = self.state().get(instance)
            if predicate(last):
                return last  # type: ignore[return-value]
            time.sleep(1)
        raise AssertionError(f"{instance}: {json.dumps(last)[:2000]}\n{(self.root / 'agent.log').read_text()[-3000:]}")

    def write_model(self, replicas: int = 1, params: str = "") -> None:
        (self.manifests / "gemma.yaml").write_text(MODEL.format(replicas=replicas, params=params))

    def cleanup(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait()
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get("RECONCILER_DATA_DIR") == str(self.data):
                    os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue


@pytest.fixture
def cluster(tmp_path: Path, gemma_path: Path) -> Iterator[Cluster]:
    hub = tmp_path / "hub" / "google" / "gemma-3-270m-GGUF"
    hub.mkdir(parents=True)
    (hub / "gemma-3-270m-q4_k_m.gguf").symlink_to(gemma_path)
    with hub_mirror(tmp_path / "hub") as mirror:
        running = Cluster(tmp_path, mirror.url)
        try:
            running.start_agent()
            yield running
        finally:
            running.cleanup()


def gone(pid: object) -> bool:
    """Dead, or a zombie nobody has reaped yet (its parent, the killed agent, is gone)."""
    try:
        return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE  # type: ignore[call-overload]
    except psutil.NoSuchProcess:
        return True


def running(instance: dict[str, object] | None) -> bool:
    return instance is not None and instance["state"] == "Running"


def chat(port: int) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=120)
    reply = client.chat.completions.create(
        model="gemma", max_tokens=24, messages=[{"role": "user", "content": "Name three colours."}]
    )
    return reply.choices[0].message.content or ""


def test_apply_serve_reapply_replace_adopt_stop_delete(cluster: Cluster) -> None:
    foreign = socket.socket()  # a listener the agent does not own, on the first port of the range
    foreign.bind(("127.0.0.1", cluster.low))
    foreign.listen()
    cluster.write_model()
    first = cluster.apply()
    assert "+ create gemma-0 on local" in first.stdout
    instance = cluster.wait("gemma-0", running)
    pid, port = instance["pid"], instance["port"]
    assert port != cluster.low, "the planner avoids the ports the agent reports in use"
    foreign.close()
    assert chat(port).strip(), "the model answered with empty text"
    measured = cluster.state()["gemma-0"]
    assert int(measured["measuredRam"]) > 50_000_000 and measured["measuredVram"] == {}  # type: ignore[call-overload]
    logs = httpx.get(
        f"http://127.0.0.1:{cluster.port}/v1/instances/gemma-0/logs",
        params={"tail": 100000},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert logs.status_code == 200 and "reconciler: starting gemma-0" in logs.text

    again = cluster.apply()
    assert "No changes." in again.stdout and "(no change)" in again.stdout
    assert cluster.state()["gemma-0"]["pid"] == pid

    cluster.write_model(params='"--n_ctx=4096"')
    replaced = cluster.apply("--wait")  # every step of the rollout: surge, replace, surge gone
    steps = replaced.stdout
    assert steps.index("+ create gemma-1 on local") < steps.index("~ replace gemma-0 on local")
    assert steps.index("~ replace gemma-0 on local") < steps.index("- delete gemma-1 on local")
    assert "converged: 1 instances Running" in steps
    instance = cluster.wait("gemma-0", lambda i: running(i) and i["pid"] != pid)
    assert "gemma-1" not in cluster.state()
    assert "4096" in instance["argv"] and gone(pid)
    pid = instance["pid"]

    cluster.kill_agent()
    assert not gone(pid), "the backend must outlive its agent"
    cluster.start_agent()
    adopted = cluster.wait("gemma-0", running, timeout=60)
    assert adopted["pid"] == pid
    assert chat(adopted["port"]).strip()

    cluster.write_model(replicas=0, params='"--n_ctx=4096"')
    stopped = cluster.apply()
    assert "- delete gemma-0 on local" in stopped.stdout and "scaled down to 0 replicas" in stopped.stdout
    cluster.wait("gemma-0", lambda i: i is None, timeout=60)
    assert gone(pid)

    cluster.write_model()
    cluster.apply()
    pid = cluster.wait("gemma-0", running)["pid"]
    (cluster.manifests / "gemma.yaml").unlink()
    removed = cluster.apply()
    assert "model is no longer in git" in removed.stdout
    cluster.wait("gemma-0", lambda i: i is None, timeout=60)
    assert gone(pid)
    cached = cluster.data / "cache" / "huggingface" / "google" / "gemma-3-270m-GGUF" / "gemma-3-270m-q4_k_m.gguf"
    assert cached.stat().st_size > 200_000_000, "model files stay when a deployment goes"


def test_crashing_backend_goes_to_error_and_restarts(cluster: Cluster) -> None:
    (cluster.manifests / "crasher.yaml").write_text(CRASHING)
    cluster.apply()
    failed = cluster.wait("crasher-0", lambda i: i is not None and i["state"] == "Error", timeout=60)
    assert failed["exitCode"] == 1 and "exited with code 1" in failed["message"]
    assert "crashing now" in failed["message"]
    restarted = cluster.wait("crasher-0", lambda i: i is not None and i["restarts"] >= 1, timeout=60)
    assert restarted["state"] in ("Error", "Starting")
