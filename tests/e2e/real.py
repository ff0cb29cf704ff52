"""Real processes for failure tests: `reconcile agent` processes, `reconcile serve --watch`,
and a tiny HTTP server as the instance (the `custom` backend), which says whose it is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.e2e.test_server_e2e import free_port, wait_for

TOKEN = "agent-token"
# The instance: answers every GET with the data dir of the agent that started it and its pid.
WHOAMI = """\
import http.server, json, os, sys

class Who(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"dataDir": os.environ["RECONCILER_DATA_DIR"], "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Who).serve_forever()
"""


def whoami_model(script: Path, replicas: int = 1, name: str = "web") -> str:
    script.write_text(WHOAMI)
    return textwrap.dedent(
        f"""\
        apiVersion: reconciler/v1
        kind: Model
        metadata: {{name: {name}}}
        spec:
          source: {{localPath: {script}}}
          backend: custom
          replicas: {replicas}
          genericProxy: true
          custom: {{command: "{sys.executable} {script} {{{{ port }}}}", healthPath: /}}
        """
    )


def cluster(agents: dict[str, str], grace: int, ports: str) -> str:
    listed = ", ".join(f"{{name: {name}, url: '{url}'}}" for name, url in agents.items())
    return textwrap.dedent(
        f"""\
        apiVersion: reconciler/v1
        kind: Cluster
        metadata: {{name: e2e}}
        spec:
          agents: [{listed}]
          portRange: '{ports}'
          reschedule: {{gracePeriodSeconds: {grace}}}
        """
    )


def port_block(size: int = 20) -> tuple[int, int]:
    """A block of ports unlikely to be another test's: near a port the kernel just handed out."""
    low = 20000 + free_port() % 30000
    return low, low + size - 1


class Agent:
    """One `reconcile agent` process on a free port, with its own data dir; restartable."""

    def __init__(self, root: Path, name: str, *extra: str) -> None:
        self.root, self.name, self.extra = root, name, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = root / f"agent-{name}"
        (root / "agent-token").write_text(TOKEN)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Agent:
        argv = [sys.executable, "-m", "reconciler.cli", "agent", "--port", str(self.port), "--host", "127.0.0.1"]
        argv += ["--data-dir", str(self.data), "--worker-name", self.name, "--worker-ip", "127.0.0.1"]
        argv += ["--token-file", str(self.root / "agent-token"), *self.extra]
        with (self.root / f"agent-{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.healthy, 60, f"agent {self.name}")
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def state(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop its instances, then the agent; instances orphaned by a kill -9 are killed by pid."""
        if self.process is not None and self.process.poll() is None:
            try:
                httpx.put(
                    f"{self.url}/v1/instances",
                    json={"generation": time.time_ns(), "instances": []},  # newer than any set the server sent
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=10,
                )
                wait_for(lambda: not self.state()["instances"], 60, f"agent {self.name}'s instances stopped")
            finally:
                self.process.terminate()
                self.process.wait(timeout=30)


class WatchServer:
    """`reconcile serve --watch DIR`, polling the agents every ``poll`` seconds."""

    def __init__(self, root: Path, router: bool = False) -> None:
        self.root = root
        self.repo = root / "repo"
        self.repo.mkdir(exist_ok=True)
        self.data = root / "server"
        self.data.mkdir(mode=0o700)  # serve --router-port opens the store before it creates the data dir
        self.port = free_port()
        self.router_port = free_port() if router else 0
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def write(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            (self.repo / name).write_text(text)

    def start(self, poll: float = 1.0) -> WatchServer:
        argv = [sys.executable, "-m", "reconciler.cli", "serve", "--watch", str(self.repo)]
        argv += ["--data-dir", str(self.data), "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--worker-poll", str(poll)]
        argv += ["--router-port", str(self.router_port)] if self.router_port else []
        with (self.root / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                env={**os.environ, "RECONCILER_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: (self.data / "server.json").exists(), 60, "server.json")
        return self

    def get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {(self.data / 'token').read_text().strip()}"}
        response = httpx.get(f"{self.url}{path}", headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/api/status")
        return body

    def instances(self) -> list[tuple[str, str, str]]:
        """(id, worker, state) of every instance the server sees."""
        return sorted((i["id"], i["worker"], i["state"]) for i in self.status()["instances"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def kill_pid(pid: int | None) -> None:
    """Kill a process this test started (an instance orphaned by its agent's kill -9)."""
    if pid is not None and psutil.pid_exists(pid):
        psutil.Process(pid).kill()
