"""A lost worker with real processes: two `reconcile agent` processes, `serve --watch` with its
router, kill -9 of one agent; its replica moves to the other after the grace period, and when
it comes back its stale copy is stopped and never served through the router."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.real import Agent, WatchServer, cluster, kill_pid, port_block, wait_for, whoami_model

pytestmark = pytest.mark.e2e
GRACE = 5


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[dict[str, Agent]]:
    started = {name: Agent(tmp_path, name).start() for name in ("a", "b")}
    with contextlib.ExitStack() as stops:  # every agent is stopped, even when one's stop fails
        for agent in started.values():
            stops.callback(agent.stop)
        yield started


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WatchServer]:
    watched = WatchServer(tmp_path, router=True)
    yield watched
    watched.stop()


class RouterProbe:
    """Asks the router for `web` again and again; remembers which agent's copy answered."""

    def __init__(self, router_port: int) -> None:
        self.url = f"http://127.0.0.1:{router_port}/model/proxy/who"
        self.answered: set[str] = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.done.is_set():
                try:
                    response = client.get(self.url, headers={"X-Model": "web"})
                except httpx.HTTPError:
                    continue
                if response.status_code == 200:
                    self.answered.add(response.json()["dataDir"])
                time.sleep(0.05)

    def __enter__(self) -> RouterProbe:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def running_on(agent: Agent) -> list[tuple[str, int | None]]:
    return [(i["id"], i["pid"]) for i in agent.state()["instances"] if i["state"] == "Running"]


def test_kill_9_moves_the_replica_and_fences_the_returning_worker(
    tmp_path: Path, agents: dict[str, Agent], server: WatchServer
) -> None:
    low, high = port_block()
    server.write(
        {
            "cluster.yaml": cluster({n: a.url for n, a in agents.items()}, GRACE, f"{low}-{high}"),
            "web.yaml": whoami_model(tmp_path / "whoami.py"),
        }
    )
    server.start(poll=1.0)
    home = wait_for(lambda: next((n for n, a in agents.items() if running_on(a)), None), 60, "web-0 Running")
    other = "b" if home == "a" else "a"
    [(_, stale_pid)] = running_on(agents[home])
    try:
        agents[home].kill9()
        killed = time.monotonic()
        # The countdown, while the instance waits out the grace period on its lost worker.
        reason = wait_for(
            lambda: next((i["reason"] for i in server.status()["instances"] if "moves in" in i["reason"]), None),
            GRACE,
            "the countdown in status",
        )
        assert reason.startswith(f"worker {home} lost ")
        assert running_on(agents[other]) == []  # nothing moves within the grace period
        wait_for(lambda: running_on(agents[other]), GRACE + 10, "web-0 Running on the other worker")
        print(f"kill -9 to Running elsewhere: {time.monotonic() - killed:.1f} s (grace {GRACE} s)")
        moves = [e for e in server.get("/api/events?limit=1000") if e["reason"] == "Moved"]
        assert [(m["object"], m["message"].split(":")[0]) for m in moves] == [("instance/web-0", f"{home} -> {other}")]
        assert psutil.pid_exists(stale_pid)  # the orphan still runs: its agent is gone

        with RouterProbe(server.router_port) as probe:
            wait_for(lambda: probe.answered, 30, "the router serving web")
            agents[home].start()  # adopts its stale copy; the server must stop it
            wait_for(lambda: not psutil.pid_exists(stale_pid), 60, "the stale copy stopped")
            wait_for(lambda: agents[home].state()["instances"] == [], 30, "the returned worker's set emptied")
            time.sleep(1.0)  # a few more requests after the stop
        assert probe.answered == {str(agents[other].data.resolve())}
        assert [i["id"] for i in agents[other].state()["instances"]] == ["web-0"]
        assert server.instances() == [("web-0", other, "Running")]
    finally:
        kill_pid(stale_pid)
