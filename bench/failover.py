"""Failover of the server: two `reconcile serve` on one PostgreSQL, one real agent on loopback.

Each round pushes a commit (the replica count changes), tells the leader, and kills it at
once: kill -9 for ten rounds, then a clean stop (SIGTERM, which releases the lease) for
three. Printed: seconds from the kill until the other server leads (median, max), commits
lost (the new leader never applied the pushed one: must be 0), and duplicates (an instance
whose spec did not change but whose process did, i.e. started twice: must be 0).

Run: .venv/bin/python bench/failover.py [KILLS [CLEAN_STOPS]]  (needs PostgreSQL: scripts/install-postgres)
"""

from __future__ import annotations

import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.ha_cluster import HTTP_SERVER, WEB, Agent, Origin, Server, cluster_yaml, wait_for
from bench.postgres import postgres, unavailable

KILLS = 10
CLEAN_STOPS = 3
RENEW = 2.0  # the default --lease-renew


def _leader(servers: list[Server]) -> tuple[Server, Server]:
    def roles() -> tuple[Server, Server] | None:
        by_role = {s.role(): s for s in servers}
        return (by_role["leader"], by_role["follower"]) if set(by_role) == {"leader", "follower"} else None

    found: tuple[Server, Server] = wait_for(roles, 60, "one leader, one follower", step=0.05)
    return found


def _round(
    agent: Agent, origin: Origin, servers: list[Server], replicas: int, sig: signal.Signals
) -> tuple[float, bool, int]:
    leader, follower = _leader(servers)
    before = agent.instances()
    revision = origin.push(
        {"cluster.yaml": cluster_yaml([agent]), "web.yaml": WEB.format(replicas=replicas, command=HTTP_SERVER)},
        f"{replicas} replicas",
    )
    leader.sync()
    killed = time.monotonic()
    leader.signal(sig)
    wait_for(lambda: follower.role() == "leader", 60, "the takeover", step=0.05)
    took = time.monotonic() - killed
    assert leader.process is not None
    leader.process.wait(timeout=60)
    try:
        wait_for(lambda: follower.status()["revision"] == revision and len(agent.running()) == replicas, 60)
        lost = False
    except AssertionError:
        lost = True
    after = agent.instances()
    doubled = sum(1 for i, pid in before.items() if i in after and pid is not None and after[i] not in (None, pid))
    leader.start()
    return took, lost, doubled


def main(kills: int = KILLS, clean_stops: int = CLEAN_STOPS) -> int:
    why = unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    with tempfile.TemporaryDirectory(prefix="failover-") as folder, postgres() as pg:
        root = Path(folder)
        root.chmod(0o755)
        agent = Agent(root, "a")
        origin = Origin(root)
        origin.push(
            {"cluster.yaml": cluster_yaml([agent]), "web.yaml": WEB.format(replicas=1, command=HTTP_SERVER)}, "1"
        )
        servers = [Server(root, name, origin, pg.url, renew=RENEW).start() for name in ("s1", "s2")]
        try:
            wait_for(lambda: len(agent.running()) == 1, 60, "the first replica")
            figures: dict[str, list[tuple[float, bool, int]]] = {"kill -9": [], "SIGTERM": []}
            for n in range(kills + clean_stops):
                sig = signal.SIGKILL if n < kills else signal.SIGTERM
                figures["kill -9" if n < kills else "SIGTERM"].append(
                    _round(agent, origin, servers, 1 + (n + 1) % 3, sig)
                )
        finally:
            for server in servers:
                server.stop()
            agent.stop()
    print(f"failover with --lease-renew {RENEW} s (lease lapses after {RENEW * 5:.0f} s):")
    for kind, rounds in figures.items():
        if not rounds:
            continue
        took = [t for t, _, _ in rounds]
        print(
            f"  {kind:8} x{len(rounds)}: takeover median {statistics.median(took):.2f} s, max {max(took):.2f} s; "
            f"commits lost {sum(lost for _, lost, _ in rounds)}; duplicates {sum(d for _, _, d in rounds)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(n) for n in sys.argv[1:3])))
