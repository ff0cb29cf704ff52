"""How fast the server converges, printed (never asserted).

1. From `git push` to the agent holding the new set: through the signed webhook, and by
   polling (sync.interval 2s). A bare repo, `reconcile serve` as a process, a simulated agent.
2. A no-op reconcile pass with 200 models on 50 simulated agents on loopback.
3. The server's HTTP p99 while a 5,000-replica plan runs (bench/plan_scale.py's cluster):
   planning runs in the server's planner process, the API stays on the event loop.

Targets: webhook < 1 s; poll <= the interval; no-op pass < 0.3 s; p99 < 50 ms.

    python bench/converge.py
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from bench.simulated import SimulatedAgents

MODEL = """\
apiVersion: reconciler/v1
kind: Model
metadata: {{name: {name}}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: {replicas}
  custom: {{command: "serve --port {{{{ port }}}}", healthPath: /}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=cwd, check=True, capture_output=True
    )


def cluster(agents: SimulatedAgents, interval: str) -> str:
    listed = ", ".join(f"{{name: {n}, url: '{agents.url(n)}'}}" for n in agents.agents)
    return (
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: bench}\nspec:\n"
        f"  agents: [{listed}]\n  portRange: '40000-40999'\n  sync: {{interval: {interval}}}\n"
    )


def push_to_set(root: Path, via_webhook: bool, rounds: int = 5) -> list[float]:
    """Seconds from a push to the simulated agent holding the pushed set, per round."""
    agents = SimulatedAgents(["a"]).start()
    origin, work, data = root / "origin.git", root / "work", root / "data"
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    git(root, "clone", "-q", str(origin), str(work))
    git(work, "checkout", "-q", "-b", "main")
    interval = "1h" if via_webhook else "2s"
    (work / "cluster.yaml").write_text(cluster(agents, interval))
    (work / "m.yaml").write_text(MODEL.format(name="m", replicas=1))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "start")
    git(work, "push", "-q", "origin", "main")
    (root / "secret").write_text("bench")
    port = free_port()
    with (root / "server.log").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "serve", f"file://{origin}", "--data-dir", str(data),
             "--host", "127.0.0.1", "--port", str(port), "--webhook-secret-file", str(root / "secret")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        agent = agents.agents["a"]
        deadline = time.monotonic() + 60
        while len(agent.instances) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        times = []
        for replicas in range(2, 2 + rounds):
            (work / "m.yaml").write_text(MODEL.format(name="m", replicas=replicas))
            git(work, "commit", "-qam", f"{replicas} replicas")
            git(work, "push", "-q", "origin", "main")
            pushed = time.monotonic()
            if via_webhook:
                body = b'{"ref": "refs/heads/main"}'
                signature = hmac.new(b"bench", body, hashlib.sha256).hexdigest()
                httpx.post(
                    f"http://127.0.0.1:{port}/api/webhook/git",
                    content=body,
                    headers={"X-Hub-Signature-256": f"sha256={signature}"},
                )
            while len(agent.instances) != replicas and time.monotonic() < pushed + 60:
                time.sleep(0.005)
            times.append(time.monotonic() - pushed)
        return times
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        agents.stop()


async def noop_pass(models: int, workers: int) -> tuple[float, float]:
    """Median and max seconds of a pass that finds nothing to do."""
    from reconciler.server import Reconciler, Store, default_url
    from reconciler.source import DirSource

    agents = SimulatedAgents([f"w{i:02d}" for i in range(workers)], memory_gib=256).start()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        manifests = root / "manifests"
        manifests.mkdir()
        (manifests / "cluster.yaml").write_text(cluster(agents, "1h"))
        for i in range(models):
            (manifests / f"m{i:03d}.yaml").write_text(MODEL.format(name=f"m{i:03d}", replicas=1))
        store = Store(default_url(root))
        rec = Reconciler(DirSource(manifests), store, None)
        for _ in range(20):
            if await rec.reconcile_once() == "UpToDate":
                break
        durations = []
        for _ in range(10):
            started = time.perf_counter()
            outcome = await rec.reconcile_once()
            durations.append(time.perf_counter() - started)
            assert outcome == "UpToDate", outcome
        store.close()
    agents.stop()
    return statistics.median(durations), max(durations)


CLIENT = textwrap.dedent(
    """
    import json, sys, time, httpx
    url, seconds = sys.argv[1], float(sys.argv[2])
    latencies = []
    with httpx.Client() as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            client.get(url)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    print(json.dumps(latencies))
    """
)


async def p99_while_planning() -> tuple[float, float, int, float]:
    """The API's p50/p99 latency while 5,000-replica plans run back to back, off the loop as the
    server runs them (its planner process)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import uvicorn

    from bench.plan_scale import catalog, cluster_workers, models, selectors
    from reconciler.estimate import cache_file, save_catalog
    from reconciler.observe import ObservedState
    from reconciler.server.api import create_app
    from reconciler.server.loop import Reconciler
    from reconciler.server.store import Store, default_url
    from reconciler.source import DirSource
    from reconciler.spec import Cluster, Desired, Metadata

    observed = ObservedState.of(cluster_workers(1000))
    desired = Desired(
        root="bench",
        cluster=Cluster(metadata=Metadata(name="bench"), spec={"portRange": "40000-40999"}),
        selectors=selectors(),
        models=tuple(models(2000)),
    )
    save_catalog(cache_file(), catalog())  # the models' metadata, as the server would have cached it
    planner = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    with tempfile.TemporaryDirectory() as folder:
        store = Store(default_url(Path(folder)))
        rec = Reconciler(DirSource(Path(folder)), store, None, planner=planner)
        await rec.compute_plan(desired, ObservedState())  # start the planner process
        token = "bench"
        app = create_app(rec, hashlib.sha256(token.encode()).hexdigest(), None)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}/healthz", "8", stdout=asyncio.subprocess.PIPE
        )
        plans, planning = 0, 0.0
        end = time.monotonic() + 8
        while time.monotonic() < end:
            started = time.perf_counter()
            result = await rec.compute_plan(desired, observed)
            planning += time.perf_counter() - started
            plans += 1
        out, _ = await client.communicate()
        server.should_exit = True
        await serving
        store.close()
    planner.shutdown()
    assert result.count("create") > 4000, result.count("create")
    latencies = sorted(json.loads(out))
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99)], plans, planning / max(plans, 1)


def main() -> None:
    os.environ.setdefault("RECONCILER_CACHE_DIR", tempfile.mkdtemp(prefix="reconciler-bench-cache-"))
    with tempfile.TemporaryDirectory() as folder:
        hooked = push_to_set(Path(folder), via_webhook=True)
    print(f"push -> agent has the set, webhook: median {statistics.median(hooked):.3f} s, max {max(hooked):.3f} s  "
          "target < 1 s")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        polled = push_to_set(Path(folder), via_webhook=False, rounds=3)
    print(f"push -> agent has the set, poll (interval 2s): median {statistics.median(polled):.3f} s, "
          f"max {max(polled):.3f} s  target <= interval")  # fmt: skip
    median, worst = asyncio.run(noop_pass(200, 50))
    print(f"no-op pass, 200 models on 50 simulated agents: median {median:.3f} s, max {worst:.3f} s  target < 0.3 s")
    p50, p99, plans, each = asyncio.run(p99_while_planning())
    print(f"HTTP while planning 5,000 replicas ({plans} plans, {each:.2f} s each): p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms  target p99 < 50 ms")  # fmt: skip


if __name__ == "__main__":
    main()
