"""The control plane at rest: CPU of the server, its planner process and the agent, nothing changing.

Starts what `reconcile up` starts (a git repo seeded from examples/quickstart, one agent, the
server watching the repository's refs, a router process) on free ports in a temporary data
dir, waits until Gemma is Running, then samples for ``--seconds`` (60): CPU time from /proc
of the server, its children (the planner process, and the `git` commands it ran) and of the
agent (not the backends it runs), and each pass's duration from /api/status. The router is
the data plane: its CPU (health probes, the table watch) is printed on a line of its own.
Targets: control plane < 2% of one core; a no-op pass < 50 ms.

    python bench/idle.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """utime + stime of one process from /proc/<pid>/stat (0 once it is gone); with ``reaped``,
    also that of its children it waited for (the server's `git` commands)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11 : 15 if reaped else 13]) / TICKS


def plane_seconds(server: int, helpers: list[int]) -> float:
    return cpu_seconds(server, reaped=True) + sum(map(cpu_seconds, helpers))


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_running(url: str, token: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
            if body.get("instances") and all(i["state"] == "Running" for i in body["instances"]):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    raise SystemExit(f"the quickstart did not reach Running within {timeout:.0f} s")


def stop_instances(agent_url: str, token: str, timeout: float = 90) -> None:
    """Hand the agent an empty set and wait until its instances are gone (they drain first)."""
    headers = {"Authorization": f"Bearer {token}"}
    body = {"generation": time.time_ns(), "instances": []}
    httpx.put(f"{agent_url}/v1/instances", json=body, headers=headers, timeout=30).raise_for_status()
    deadline = time.monotonic() + timeout
    while (
        time.monotonic() < deadline
        and httpx.get(f"{agent_url}/v1/state", headers=headers, timeout=10).json()["instances"]
    ):
        time.sleep(0.5)


def sample(
    server: int, agent: int, router: int, url: str, token: str, seconds: float
) -> tuple[float, float, float, list[float]]:
    """CPU seconds of (server + its children, agent, router) over the window, and the pass durations seen."""
    helpers = children(server)  # the planner process (and multiprocessing's resource tracker)
    before = plane_seconds(server, helpers), cpu_seconds(agent), cpu_seconds(router)
    durations: dict[float, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1)
        body = httpx.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        last = body.get("lastPass") or {}
        if last.get("at"):
            durations[last["at"]] = last["duration"]
    after = plane_seconds(server, sorted({*helpers, *children(server)})), cpu_seconds(agent), cpu_seconds(router)
    return after[0] - before[0], after[1] - before[1], after[2] - before[2], list(durations.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    from reconciler.agent import read_or_create_token
    from reconciler.cli.local import seed_repo

    python = [sys.executable, "-m", "reconciler.cli"]
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        data.chmod(0o700)
        _, token_path = read_or_create_token(None, data)
        token = token_path.read_text().strip()
        agent_port, port, router_port = free_port(), free_port(), free_port()
        seed_repo(data / "repo", f"http://127.0.0.1:{agent_port}")
        agent_flags = ["--port", str(agent_port), "--host", "127.0.0.1", "--data-dir", str(data / "agent")]
        agent_flags += ["--worker-name", "local", "--worker-ip", "127.0.0.1", "--token-file", str(token_path)]
        agent = spawn([*python, "agent", *agent_flags], data / "agent.log")
        server_flags = [f"file://{data / 'repo'}", "--branch", "main", "--data-dir", str(data), "--host", "127.0.0.1"]
        server_flags += ["--port", str(port), "--agent-token-file", str(token_path), "--watch-refs"]
        server = spawn([*python, "serve", *server_flags], data / "server.log")
        url = f"http://127.0.0.1:{port}"
        router_flags = ["--server", url, "--token-file", str(token_path), "--port", str(router_port)]
        router = spawn([*python, "router", *router_flags, "--host", "127.0.0.1"], data / "router.log")
        try:
            wait_running(url, token)
            time.sleep(5)  # let the passes that started the model settle
            plane, agent_cpu, router_cpu, passes = sample(server.pid, agent.pid, router.pid, url, token, args.seconds)
        finally:
            for process in (router, server):
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
            stop_instances(f"http://127.0.0.1:{agent_port}", token)  # backends outlive their agent by design
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(30)
    total = plane + agent_cpu
    print(f"idle control plane over {args.seconds:.0f} s (quickstart Running, nothing changing):")
    print(f"  server + planner  {plane:6.2f} CPU-s  {100 * plane / args.seconds:5.2f}% of a core")
    print(f"  agent             {agent_cpu:6.2f} CPU-s  {100 * agent_cpu / args.seconds:5.2f}% of a core")
    print(f"  total             {total:6.2f} CPU-s  {100 * total / args.seconds:5.2f}% of a core (target < 2%)")
    print(f"  router (data plane) {router_cpu:4.2f} CPU-s  {100 * router_cpu / args.seconds:5.2f}% of a core")
    if passes:
        print(
            f"  passes: {len(passes)}, duration median {1000 * statistics.median(passes):.1f} ms, "
            f"max {1000 * max(passes):.1f} ms (target < 50 ms)"
        )


if __name__ == "__main__":
    main()
