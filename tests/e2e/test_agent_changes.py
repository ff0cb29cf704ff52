"""The server's watch on an agent, against a real `reconcile agent`: a started instance, a
killed backend and a restarted agent each wake the server's loop at once."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.server.agent_watch import watch_agent
from reconciler.spec import Agent as AgentSpec
from tests.e2e.real import TOKEN, WHOAMI, Agent, kill_pid, wait_for
from tests.net import free_port

pytestmark = pytest.mark.e2e


class Watch:
    """watch_agent on a loop of its own, counting its wakes."""

    def __init__(self, agent: Agent) -> None:
        self.wakes = 0
        self.loop = asyncio.new_event_loop()
        spec = AgentSpec(name=agent.name, url=agent.url)
        self.task = self.loop.create_task(watch_agent(spec, TOKEN, self._woken))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _woken(self) -> None:
        self.wakes += 1

    def after(self, wakes: int, what: str) -> int:
        return int(wait_for(lambda: self.wakes > wakes and self.wakes, 30, what))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    started = Agent(tmp_path, "a").start()
    yield started
    started.stop()


@pytest.fixture
def watch(agent: Agent) -> Iterator[Watch]:
    watching = Watch(agent)
    yield watching
    watching.stop()


def put(agent: Agent, script: Path, port: int) -> None:
    spec = {
        "id": "web-0",
        "model": "web",
        "backend": "custom",
        "argv": [sys.executable, str(script), str(port)],
        "port": port,
        "healthPath": "/",
    }
    body = {"generation": time.time_ns(), "instances": [spec]}
    response = httpx.put(f"{agent.url}/v1/instances", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    response.raise_for_status()


def instance(agent: Agent) -> dict[str, object] | None:
    return next(iter(agent.state()["instances"]), None)


def test_changes_wake_the_watch(tmp_path: Path, agent: Agent, watch: Watch) -> None:
    script = tmp_path / "whoami.py"
    script.write_text(WHOAMI)
    time.sleep(1)  # the watch has its first version: nothing has changed yet
    assert watch.wakes == 0

    put(agent, script, free_port())
    first = wait_for(lambda: (i := instance(agent)) and i["state"] == "Running" and i, 60, "web-0 Running")
    watch.after(0, "a wake for the new instance")
    time.sleep(1.5)  # every wake of the start is in

    wakes = watch.wakes
    kill_pid(int(str(first["pid"])))  # the backend dies; the agent sees it and restarts it
    wakes = watch.after(wakes, "a wake for the killed backend")
    wait_for(lambda: (i := instance(agent)) and i["state"] == "Running" and i["pid"] != first["pid"], 60, "restarted")
    time.sleep(1.5)

    wakes = watch.wakes
    agent.kill9()  # the agent itself: the watch retries, then sees the version of the new agent
    agent.start()
    watch.after(wakes, "a wake for the restarted agent")
