"""A drain outlives its agent: a real `reconcile agent` is kill -9'd while an instance drains
a stream, and started again; the stream ends with [DONE] and only then is the process stopped."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.agent.test_drain import UPSTREAM, Stream
from tests.e2e.real import TOKEN, Agent, kill_pid
from tests.e2e.test_server_e2e import wait_for
from tests.net import free_port

pytestmark = pytest.mark.e2e


def put(agent: Agent, instances: list[dict[str, Any]]) -> None:
    body = {"generation": time.time_ns(), "instances": instances}
    response = httpx.put(
        f"{agent.url}/v1/instances", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text


def instance(agent: Agent) -> dict[str, Any] | None:
    return next(iter(agent.state()["instances"]), None)


def test_a_stream_on_a_draining_instance_outlives_a_kill_of_its_agent(tmp_path: Path) -> None:
    port = free_port()
    spec = {
        "id": "up-0",
        "model": "up",
        "backend": "custom",
        "argv": [sys.executable, str(UPSTREAM), "--port", str(port), "--name", "up-0"],
        "port": port,
        "healthPath": "/v1/models",
        "drainSeconds": 120,
    }
    agent = Agent(tmp_path, "w").start()
    pid: int | None = None
    stream: Stream | None = None
    try:
        put(agent, [spec])
        pid = wait_for(lambda: (i := instance(agent)) and i["state"] == "Running" and i["pid"], 60, "Running")
        stream = Stream(port, chunks=60, delay=0.2)  # 12 s
        assert stream.first_event().startswith("data:")
        put(agent, [])  # scaled to zero: it drains while the stream runs
        wait_for(lambda: "1 client connection(s) open" in (instance(agent) or {}).get("message", ""), 30, "drain")

        agent.kill9()
        agent.start()
        draining = instance(agent)
        assert draining is not None and (draining["state"], draining["pid"]) == ("Draining", pid)
        wait_for(lambda: instance(agent) is None, 120, "the drain's end")
        stream.join(30)
        assert stream.error is None and stream.events[-1] == "data: [DONE]" and len(stream.events) == 61
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if stream is not None and stream.process.poll() is None:
            stream.process.kill()
        agent.stop()
        kill_pid(pid)
