"""Seconds from `kill -9` of an agent to its replica Running on another agent.

Real processes, as in tests/e2e/test_lost_workers.py (whose helpers this uses): two
`reconcile agent` processes, `reconcile serve --watch`, a one-replica `custom` model (a small
Python HTTP server). Each run kills the agent that runs the replica and times until the other
agent reports it Running. Prints every run and the median.

    python -m bench.lost_worker [--runs 3] [--grace 5] [--worker-poll 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.e2e.real import Agent, WatchServer, cluster, kill_pid, port_block, wait_for, whoami_model


def running(agent: Agent) -> list[int | None]:
    return [i["pid"] for i in agent.state()["instances"] if i["state"] == "Running"]


def one_run(root: Path, grace: int, poll: float) -> float:
    agents = {name: Agent(root, name).start() for name in ("a", "b")}
    server = WatchServer(root)
    stale: int | None = None
    try:
        low, high = port_block()
        server.write(
            {
                "cluster.yaml": cluster({n: a.url for n, a in agents.items()}, grace, f"{low}-{high}"),
                "web.yaml": whoami_model(root / "whoami.py"),
            }
        )
        server.start(poll=poll)
        home = wait_for(lambda: next((n for n, a in agents.items() if running(a)), None), 60, "web-0 Running")
        other = "b" if home == "a" else "a"
        [stale] = running(agents[home])
        agents[home].kill9()
        killed = time.monotonic()
        wait_for(lambda: running(agents[other]), grace + 120, "web-0 Running elsewhere")
        return time.monotonic() - killed
    finally:
        server.stop()
        for agent in agents.values():
            agent.stop()
        kill_pid(stale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--grace", type=int, default=5, help="reschedule.gracePeriodSeconds")
    parser.add_argument("--worker-poll", type=float, default=1.0, help="serve --worker-poll")
    args = parser.parse_args()
    seconds = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            seconds.append(one_run(Path(folder), args.grace, args.worker_poll))
        print(f"run {run + 1}: kill -9 to Running elsewhere {seconds[-1]:.1f} s", flush=True)
    print(
        f"grace {args.grace} s, worker poll {args.worker_poll} s: median {statistics.median(seconds):.1f} s, "
        f"min {min(seconds):.1f} s, max {max(seconds):.1f} s over {len(seconds)} runs"
    )


if __name__ == "__main__":
    main()
