"""Chaos bench: faults against `reconcile up` under load, one table per fault class at the end.

`reconcile up` (agent, server, router, Gemma) on free ports, plus an OpenAI-shaped fake
upstream (tests/router/upstream.py) deployed as a `custom` Model `echo` at 2 replicas, and a
second router process. Closed-loop clients send streamed and plain requests through both
routers; like the OpenAI SDK, a client retries once (on the other router) when its request
fails before any answer came. Faults, in random order, ``--cycles`` times each:

- agent:    kill -9 of the agent, `up` again 2 s later
- server:   kill -9 of the server (its planner process must die with it), `up` again 2 s later
- router:   kill -9 of the second router, started again 2 s later
- backend:  kill -9 of one echo instance; the agent restarts it (the first restart is immediate)
- scale:    2 -> 1 -> 2 replicas while long streams run
- rollout:  a changed command: replicas replaced one at a time

Per class: requests sent (started between the fault and convergence), failed (after the one
retry) with error kinds, retried, duplicates (an instance id with two live processes at any
sample), orphans (a planner surviving its server), and seconds from the fault (or from the
restart, for a killed process that needs one) until converged: every echo replica Running,
no rollout, both routers fresh and routing to every replica.

    python bench/chaos.py [--cycles 3] [--seed 7] [--clients 6]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = ROOT / "tests" / "router" / "upstream.py"
FAULTS = ("agent", "server", "router", "backend", "scale", "rollout")
ECHO = """\
apiVersion: reconciler/v1
kind: Model
metadata: {{name: echo}}
spec:
  source: {{localPath: {python}}}
  backend: custom
  replicas: {replicas}
  drainSeconds: 30
  custom: {{command: "{python} {upstream} --port {{{{ port }}}} --name {name}", healthPath: /v1/models}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Seconds it took; raises when ``check`` stays false for ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"not converged within {seconds:.0f}s: {what}")


# --- the cluster ------------------------------------------------------------------------


class Cluster:
    """`reconcile up` in a data dir of its own, the echo Model, and a second router."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.ports = {"server": free_port(), "agent": free_port(), "router": free_port(), "router2": free_port()}
        self.env = {**os.environ, "RECONCILER_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
        self.replicas = 2
        self.version = 1
        self.router2: subprocess.Popen[bytes] | None = None

    @property
    def routers(self) -> list[str]:
        return [f"http://127.0.0.1:{self.ports['router']}", f"http://127.0.0.1:{self.ports['router2']}"]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "reconciler.cli", *args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def up(self) -> None:
        ports = ["--port", str(self.ports["server"]), "--agent-port", str(self.ports["agent"])]
        done = self.cli("up", *ports, "--router-port", str(self.ports["router"]), timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"reconcile up failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self.up()
        self.commit("echo: two fake upstream replicas")
        self.start_router2()
        wait_until(self.converged, 180, "echo serving on both routers")

    def start_router2(self) -> None:
        argv = [sys.executable, "-m", "reconciler.cli", "router", "--port", str(self.ports["router2"])]
        argv += ["--server", f"http://127.0.0.1:{self.ports['server']}", "--token-file", str(self.data / "token")]
        with (self.data / "router2.log").open("ab") as log:
            self.router2 = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def commit(self, message: str) -> None:
        text = ECHO.format(
            python=sys.executable, upstream=UPSTREAM, replicas=self.replicas, name=f"echo-v{self.version}"
        )
        repo = self.data / "repo"
        (repo / "echo.yaml").write_text(text, encoding="utf-8")
        git = ["git", "-C", str(repo), "-c", "user.name=chaos", "-c", "user.email=chaos@reconciler.invalid"]
        subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
        subprocess.run([*git, "commit", "-qm", message], check=True, capture_output=True)

    def status(self) -> dict[str, Any] | None:
        """``GET /api/status`` (what ``reconcile status -o json`` prints), or None while down."""
        try:
            token = (self.data / "token").read_text(encoding="utf-8").strip()
            response = httpx.get(
                f"http://127.0.0.1:{self.ports['server']}/api/status",
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
        except (OSError, httpx.HTTPError):
            return None
        body: dict[str, Any] = response.json() if response.status_code == 200 else None
        return body

    def record(self, name: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = json.loads((self.data / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return body

    def echo_instances(self) -> list[dict[str, Any]]:
        status = self.status() or {}
        return [i for i in status.get("instances", []) if i["model"] == "echo"]

    def converged(self) -> bool:
        status = self.status()
        if status is None:
            return False
        echo = [i for i in status["instances"] if i["model"] == "echo"]
        model = next((m for m in status["models"] if m["name"] == "echo"), None)
        if model is None or model["rollout"] is not None or len(echo) != self.replicas:
            return False
        if any(i["state"] != "Running" or f"echo-v{self.version}" not in " ".join(self.argv(i["pid"])) for i in echo):
            return False
        return all(self.router_serves(url) for url in self.routers)

    def router_serves(self, url: str) -> bool:
        try:
            health = httpx.get(f"{url}/healthz", timeout=2).json()
            metrics = httpx.get(f"{url}/metrics", timeout=2).text
        except (httpx.HTTPError, ValueError):
            return False
        line = f'reconciler_router_healthy_instances{{model="echo"}} {float(self.replicas)}'
        return health.get("status") == "ok" and line in metrics

    @staticmethod
    def argv(pid: int | None) -> list[str]:
        try:
            return psutil.Process(pid or 0).cmdline()
        except psutil.Error:
            return []

    def instance_processes(self) -> Counter[str]:
        """Live instance processes of this cluster's agent, by instance id."""
        found: Counter[str] = Counter()
        agent_dir = str(self.data / "agent")
        for process in psutil.process_iter(["pid"]):
            try:
                environ = process.environ()
                if environ.get("RECONCILER_DATA_DIR") == agent_dir and process.status() != psutil.STATUS_ZOMBIE:
                    found[environ.get("RECONCILER_INSTANCE", "?")] += 1
            except psutil.Error:
                continue
        return found

    def ours(self) -> list[int]:
        """Every live process that belongs to this data dir (for the check after `down`)."""
        mine = []
        me = psutil.Process()
        this_bench = {me.pid, *(p.pid for p in me.parents())}  # whose argv may name the data dir (--keep)
        for process in psutil.process_iter(["pid"]):
            if process.pid in this_bench:
                continue
            try:
                text = " ".join(process.cmdline()) + " " + process.environ().get("RECONCILER_DATA_DIR", "")
                if str(self.data) in text and process.status() != psutil.STATUS_ZOMBIE:
                    mine.append(process.pid)
            except psutil.Error:
                continue
        return mine

    def stop(self) -> None:
        if self.router2 is not None and self.router2.poll() is None:
            self.router2.terminate()
            self.router2.wait(30)
        self.cli("down", timeout=300)


# --- the load ---------------------------------------------------------------------------


@dataclass
class Result:
    started: float
    ended: float
    stream: bool
    error: str = ""  # "" when it succeeded
    retried: bool = False
    router: int = 0


@dataclass
class Load:
    routers: list[str]
    clients: int
    results: list[Result] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    long_streams: bool = False  # during scale faults: streams of about 4 s

    def start(self) -> None:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)
        hung = [t for t in self.threads if t.is_alive()]
        if hung:
            raise RuntimeError(f"{len(hung)} clients hung")

    def _client(self, index: int) -> None:
        stream = index % 3 == 2
        with httpx.Client(timeout=httpx.Timeout(60, connect=3)) as client:
            while not self.stop.is_set():
                home = index % len(self.routers)
                started = time.monotonic()
                error, sent = self._once(client, self.routers[home], stream)
                retried = False
                if error.startswith("before answer:"):  # the SDK's retry: once, on the other router
                    retried = True
                    error, sent = self._once(client, self.routers[1 - home], stream)
                self.results.append(Result(started, time.monotonic(), stream, error, retried, home))
                if not sent:
                    time.sleep(0.05)

    def _once(self, client: httpx.Client, router: str, stream: bool) -> tuple[str, bool]:
        chunks = 40 if self.long_streams else 10
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        if stream:
            body |= {"stream": True, "chunks": chunks, "chunk_delay": 0.1}
        answered = False
        try:
            with client.stream("POST", f"{router}/v1/chat/completions", json=body) as response:
                answered = True
                if response.status_code != 200:
                    response.read()
                    return f"HTTP {response.status_code}", True
                lines = [line for line in response.iter_lines() if line.startswith("data:")]
        except httpx.TransportError as exc:
            where = "mid-answer" if answered else "before answer"
            return f"{where}: {type(exc).__name__}", answered
        if stream and lines and '"error"' in lines[-1]:
            return "stream ended with an error event", True
        if stream and (not lines or lines[-1] != "data: [DONE]"):
            return "stream cut without [DONE]", True
        return "", True


# --- the faults -------------------------------------------------------------------------


@dataclass
class Phase:
    fault: str
    started: float
    ended: float = 0.0
    converge_s: float = 0.0  # from the fault
    after_restart_s: float = 0.0  # from the end of the restart it needed (`up`, a new router)
    duplicates: int = 0
    orphans: int = 0


class Duplicates(threading.Thread):
    """Samples the instance processes while a fault runs: the most copies of one id."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster, self.worst, self.done = cluster, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            counts = self.cluster.instance_processes()
            self.worst = max(self.worst, sum(1 for n in counts.values() if n > 1))
            time.sleep(0.5)


def kill(pid: int | None) -> None:
    if pid:
        os.kill(pid, signal.SIGKILL)


def planner_of(pid: int | None) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid or 0).children() if "spawn_main" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def inject(cluster: Cluster, fault: str, load: Load) -> tuple[float, float, int]:
    """Cause one fault; returns (when it happened, when the restart it needs was done, orphans)."""
    started = time.monotonic()
    if fault == "agent":
        kill(cluster.record("agent.json").get("pid"))
        time.sleep(2)
        cluster.up()
        return started, time.monotonic(), 0
    if fault == "server":
        pid = cluster.record("server.json").get("pid")
        planners = planner_of(pid)
        kill(pid)
        time.sleep(2)
        orphans = sum(1 for p in planners if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie")
        cluster.up()
        return started, time.monotonic(), orphans
    if fault == "router":
        assert cluster.router2 is not None
        cluster.router2.kill()
        cluster.router2.wait()
        time.sleep(2)
        cluster.start_router2()
        return started, time.monotonic(), 0
    if fault == "backend":
        kill(random.choice(cluster.echo_instances())["pid"])
        return started, started, 0
    if fault == "scale":
        load.long_streams = True
        time.sleep(1)
        cluster.replicas = 1
        cluster.commit("scale echo to 1")
        try:
            seen = wait_until(lambda: any(i["state"] == "Draining" for i in cluster.echo_instances()), 30, "")
            print(f"  scale: status showed Draining {seen:.1f}s after the commit", flush=True)
        except TimeoutError:
            print("  scale: status never showed Draining (the drain ended between two polls)", flush=True)
        wait_until(cluster.converged, 120, "scaled to 1")
        cluster.replicas = 2
        started = time.monotonic()
        cluster.commit("scale echo to 2")
        return started, started, 0
    cluster.version += 1
    cluster.commit(f"roll echo out to v{cluster.version}")
    return started, started, 0


def run_faults(cluster: Cluster, load: Load, faults: list[str]) -> list[Phase]:
    phases = []
    for fault in faults:
        time.sleep(2)
        sampler = Duplicates(cluster)
        sampler.start()
        phase = Phase(fault, time.monotonic())
        happened, restarted, phase.orphans = inject(cluster, fault, load)
        try:
            wait_until(cluster.converged, 180, f"after {fault}")
            phase.converge_s, phase.after_restart_s = time.monotonic() - happened, time.monotonic() - restarted
        finally:
            load.long_streams = False
            phase.ended = time.monotonic()
            sampler.done.set()
            sampler.join()
        phase.duplicates = sampler.worst
        phases.append(phase)
        print(f"  {fault}: converged {phase.converge_s:.1f}s after the fault", flush=True)
    return phases


# --- the report -------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    cycles: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    orphans: int = 0
    converge: list[float] = field(default_factory=list)
    after_restart: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # when and where each failed request was


def summarize(phases: list[Phase], results: list[Result]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for phase in phases:
        row = rows.setdefault(phase.fault, Row(phase.fault))
        row.cycles += 1
        row.duplicates = max(row.duplicates, phase.duplicates)
        row.orphans += phase.orphans
        row.converge.append(phase.converge_s)
        row.after_restart.append(phase.after_restart_s)
        for result in results:
            if phase.started <= result.started < phase.ended:
                row.sent += 1
                row.retried += result.retried
                if result.error:
                    row.failed += 1
                    row.kinds[("stream " if result.stream else "") + result.error] += 1
                    row.failures.append(
                        f"{phase.fault}: started {result.started - phase.started:.1f}s into the fault, "
                        f"ended {result.ended - phase.started:.1f}s, router {result.router + 1}: {result.error}"
                    )
    return rows


def print_table(rows: dict[str, Row]) -> None:
    print(
        "\n| fault | cycles | sent | failed | retried | error kinds | duplicates | orphans "
        "| converged after the fault (s, max) | after its restart (s, max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows.values():
        kinds = ", ".join(f"{k}: {n}" for k, n in row.kinds.most_common()) or "-"
        print(
            f"| {row.fault} | {row.cycles} | {row.sent} | {row.failed} | {row.retried} | {kinds} | "
            f"{row.duplicates} | {row.orphans} | {max(row.converge):.1f} | {max(row.after_restart):.1f} |"
        )
    for row in rows.values():
        for failure in row.failures:
            print(f"  failed: {failure}")


@contextmanager
def cluster_in(data: Path) -> Iterator[Cluster]:
    cluster = Cluster(data)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def chaos(
    data: Path, cycles: int, seed: int, clients: int, kinds: tuple[str, ...] = FAULTS
) -> tuple[dict[str, Row], list[int]]:
    """Run the bench; returns the rows and the processes of ours still alive after `down`."""
    random.seed(seed)
    faults = [fault for fault in kinds for _ in range(cycles)]
    random.shuffle(faults)
    with cluster_in(data) as cluster:
        load = Load(cluster.routers, clients)
        load.start()
        try:
            phases = run_faults(cluster, load, faults)
        finally:
            load.finish()
    time.sleep(1)
    return summarize(phases, load.results), cluster.ours()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--faults", default=",".join(FAULTS), help="a subset, comma-separated")
    parser.add_argument("--keep", type=Path, help="a data dir to keep (logs) instead of a temporary one")
    args = parser.parse_args()
    kinds = tuple(f for f in args.faults.split(",") if f in FAULTS)
    with tempfile.TemporaryDirectory(prefix="reconciler-chaos-") as folder:
        data = args.keep or Path(folder) / "data"
        rows, left = chaos(data, args.cycles, args.seed, args.clients, kinds)
    print_table(rows)
    print(f"\nprocesses of ours left after `reconcile down`: {len(left)}")


if __name__ == "__main__":
    main()
