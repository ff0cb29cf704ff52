"""Ports with real processes: three `reconcile agent` processes on one host (one with its own
--port-range), `serve --watch`, and a foreign process that takes a placed instance's port."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.real import Agent, WatchServer, cluster, kill_pid, port_block, wait_for, whoami_model

pytestmark = pytest.mark.e2e
HOLD_PORT = textwrap.dedent(
    """\
    import socket, sys, time
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    print("holding", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def own_range() -> tuple[int, int]:
    return port_block(10)


@pytest.fixture
def agents(tmp_path: Path, own_range: tuple[int, int]) -> Iterator[dict[str, Agent]]:
    low, high = own_range
    started = {
        "a": Agent(tmp_path, "a").start(),
        "b": Agent(tmp_path, "b").start(),
        "c": Agent(tmp_path, "c", "--port-range", f"{low}-{high}").start(),
    }
    with contextlib.ExitStack() as stops:  # every agent is stopped, even when one's stop fails
        for agent in started.values():
            stops.callback(agent.stop)
        yield started


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WatchServer]:
    watched = WatchServer(tmp_path)
    yield watched
    watched.stop()


def running(agents: dict[str, Agent]) -> dict[str, dict[str, Any]]:
    """Per worker, its Running instance (each runs one replica here)."""
    found = {}
    for name, agent in agents.items():
        for instance in agent.state()["instances"]:
            if instance["state"] == "Running":
                found[name] = instance
    return found


def test_agents_on_one_host_get_distinct_ports_and_a_taken_port_moves(
    tmp_path: Path, agents: dict[str, Agent], server: WatchServer, own_range: tuple[int, int]
) -> None:
    low, high = port_block()
    server.write(
        {
            "cluster.yaml": cluster({n: a.url for n, a in agents.items()}, 300, f"{low}-{high}"),
            "web.yaml": whoami_model(tmp_path / "whoami.py", replicas=3),
        }
    )
    server.start(poll=1.0)
    placed = wait_for(lambda: (r := running(agents)) and len(r) == 3 and r, 90, "three replicas Running")
    assert agents["c"].state()["portRange"] == f"{own_range[0]}-{own_range[1]}"
    assert agents["a"].state()["portRange"] is None
    assert own_range[0] <= placed["c"]["port"] <= own_range[1]  # its own range wins
    assert {placed["a"]["port"], placed["b"]["port"]} <= set(range(low, high + 1))
    assert placed["a"]["port"] != placed["b"]["port"]  # one host, one port space

    taken, victim = placed["a"]["port"], placed["a"]["pid"]
    holder: subprocess.Popen[str] | None = None
    try:
        psutil.Process(victim).kill()  # the instance dies; before its restart another process takes its port
        holder = subprocess.Popen([sys.executable, "-c", HOLD_PORT, str(taken)], stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        name = psutil.Process(holder.pid).name()
        moved = wait_for(
            lambda: (i := running(agents).get("a")) and i["port"] != taken and i, 60, "web on a Running on a new port"
        )
        assert low <= moved["port"] <= high
        assert moved["id"] == placed["a"]["id"]
        events = [e for e in server.get("/api/events?limit=1000") if e["reason"] == "Moved"]
        assert [(e["object"], e["message"]) for e in events] == [
            (
                f"instance/{moved['id']}",
                f"port {taken} -> {moved['port']} on a: port {taken} taken by pid {holder.pid} ({name})",
            )
        ]
        assert running(agents)["b"]["port"] == placed["b"]["port"]  # the others stay
        assert running(agents)["c"]["port"] == placed["c"]["port"]
    finally:
        if holder is not None:
            holder.kill()
            holder.communicate()
        kill_pid(victim)
