"""Processes for the HA test and bench: a git origin, `reconcile serve` processes on one
PostgreSQL, real agents, and network namespaces to put agents on hosts of their own.

Each namespace gets a veth pair in a private /30 made for it (10.213.N.0/30, N from the
pid), so traffic stays between the host and our own namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

AGENT_TOKEN = "ha-agent-token"
HTTP_SERVER = f"{sys.executable} -m http.server {{{{ port }}}} --bind 0.0.0.0"
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "", step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"rcprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Host:
    """A network namespace joined to the host by a veth pair: the host at .1, the namespace at .2."""

    def __init__(self, index: int) -> None:
        tag = f"{os.getpid() % 10000}{index}"
        self.ns = f"rc{tag}"
        self.outer = f"rch{tag}"
        inner = f"rcn{tag}"
        subnet = f"10.213.{os.getpid() % 250}"
        self.host_ip, self.ip = f"{subnet}.{index * 4 + 1}", f"{subnet}.{index * 4 + 2}"
        for argv in (
            ["ip", "netns", "add", self.ns],
            ["ip", "link", "add", self.outer, "type", "veth", "peer", "name", inner],
            ["ip", "link", "set", inner, "netns", self.ns],
            ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.outer],
            ["ip", "link", "set", self.outer, "up"],
            ["ip", "-n", self.ns, "addr", "add", f"{self.ip}/30", "dev", inner],
            ["ip", "-n", self.ns, "link", "set", inner, "up"],
            ["ip", "-n", self.ns, "link", "set", "lo", "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)

    def link(self, up: bool) -> None:
        """Cut the host off (or join it again): its processes keep running, unreachable."""
        subprocess.run(["ip", "link", "set", self.outer, "up" if up else "down"], check=True, capture_output=True)

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


class Agent:
    """A real `reconcile agent`, on a namespace's address or on loopback."""

    def __init__(self, root: Path, name: str, host: Host | None = None) -> None:
        self.name = name
        self.data = root / f"agent-{name}"
        self.ip = host.ip if host else "127.0.0.1"
        self.port = free_port()
        self.url = f"http://{self.ip}:{self.port}"
        token = root / "agent-token"
        token.write_text(AGENT_TOKEN)
        argv = [
            sys.executable, "-m", "reconciler.cli", "agent", "--host", self.ip, "--port", str(self.port),
            "--data-dir", str(self.data), "--worker-name", name, "--worker-ip", self.ip, "--token-file", str(token),
        ]  # fmt: skip
        with (root / f"agent-{name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                host.wrap(argv) if host else argv, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        wait_for(lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, what=f"agent {name}")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {AGENT_TOKEN}"}

    def instances(self) -> dict[str, int | None]:
        """Instance id -> pid, as the agent reports them (Running or not)."""
        body = httpx.get(f"{self.url}/v1/state", headers=self.headers(), timeout=5).json()
        return {i["id"]: i["pid"] for i in body["instances"]}

    def running(self) -> list[str]:
        body = httpx.get(f"{self.url}/v1/state", headers=self.headers(), timeout=5).json()
        return sorted(i["id"] for i in body["instances"] if i["state"] == "Running")

    def record(self) -> dict[str, Any]:
        """The agent's persisted state: the highest epoch and generation it accepted."""
        body: dict[str, Any] = json.loads((self.data / "state.json").read_text())
        return body

    def put(self, epoch: int, generation: int, instances: list[dict[str, Any]]) -> httpx.Response:
        body = {"epoch": epoch, "generation": generation, "instances": instances}
        return httpx.put(f"{self.url}/v1/instances", json=body, headers=self.headers(), timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            with httpx.Client(timeout=10) as client:
                try:  # its instances go with it (epoch 0: outside the lease, only the generation counts)
                    client.put(
                        f"{self.url}/v1/instances",
                        json={"generation": time.time_ns(), "instances": []},
                        headers=self.headers(),
                    )
                    wait_for(lambda: not self.instances(), 30, "instances stopped")
                except (httpx.HTTPError, AssertionError):
                    pass
            self.process.terminate()
            self.process.wait(timeout=30)


class Origin:
    """A bare git repository and a clone to push from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        git(root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        git(root, "clone", "-q", str(self.bare), str(self.work))
        git(self.work, "checkout", "-q", "-b", "main")

    def push(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (self.work / name).write_text(text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        git(self.work, "push", "-q", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")


def cluster_yaml(agents: list[Agent], grace: int = 300, interval: str = "1h") -> str:
    listed = ", ".join(f"{{name: {a.name}, url: '{a.url}'}}" for a in agents)
    return (
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: ha}\nspec:\n"
        f"  agents: [{listed}]\n  portRange: '43300-43339'\n"
        f"  reschedule: {{gracePeriodSeconds: {grace}}}\n  sync: {{interval: {interval}}}\n"
    )


class Server:
    """One `reconcile serve` of the store, with its own data dir, port and --id."""

    def __init__(self, root: Path, name: str, origin: Origin, store_url: str, renew: float = 1.0) -> None:
        self.name = name
        self.root = root
        self.data = root / f"server-{name}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [
            sys.executable, "-m", "reconciler.cli", "serve", f"file://{origin.bare}", "--data-dir", str(self.data),
            "--host", "127.0.0.1", "--port", str(self.port), "--store-url", store_url, "--id", name,
            "--lease-renew", str(renew), "--worker-poll", "0.5",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        env = {**os.environ, "RECONCILER_TOKEN": AGENT_TOKEN, "PYTHONUNBUFFERED": "1"}
        with (self.root / f"server-{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.answers, 60, f"server {self.name}")
        return self

    def answers(self) -> bool:
        return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(self.data / 'token').read_text().strip()}"}

    def status(self, timeout: float = 5) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/status", headers=self.headers(), timeout=timeout)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def role(self) -> str | None:
        try:
            return str(self.status(timeout=2)["role"])
        except (httpx.HTTPError, OSError, ValueError):
            return None

    def sync(self) -> None:
        httpx.post(f"{self.url}/api/sync", headers=self.headers(), timeout=5)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=30)
