"""Drain before stop, with real processes: an OpenAI-shaped upstream as the instance, a real
streaming client on it, the supervisor retiring it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import psutil

from reconciler.agent.files import ModelFiles
from reconciler.agent.supervisor import Supervisor
from reconciler.observe import InstanceSpec
from tests.router.upstream import free_socket

UPSTREAM = Path(__file__).resolve().parents[1] / "router" / "upstream.py"


def free_port() -> int:
    sock = free_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def upstream_spec(port: int, drain_seconds: int) -> InstanceSpec:
    return InstanceSpec(
        id="up-0",
        model="up",
        backend="custom",
        argv=[sys.executable, str(UPSTREAM), "--port", str(port), "--name", "up-0"],
        port=port,
        health_path="/v1/models",
        drain_seconds=drain_seconds,
    )


async def until(supervisor: Supervisor, predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await supervisor.step()
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return False


CLIENT = """
import json, sys, httpx
body = {"model": "up", "messages": [], "stream": True, "chunks": int(sys.argv[2]), "chunk_delay": float(sys.argv[3])}
try:
    with httpx.stream("POST", f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                print(line, flush=True)
except httpx.HTTPError as exc:
    print("error", type(exc).__name__, flush=True)
"""


class Stream:
    """One streamed chat request from another process (the agent's own connections are not
    clients): the events it received, and how it ended."""

    def __init__(self, port: int, chunks: int, delay: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(port), str(chunks), str(delay)], stdout=subprocess.PIPE, text=True
        )
        self.events: list[str] = []
        self.error: str | None = None

    def join(self, seconds: float) -> None:
        out, _ = self.process.communicate(timeout=seconds)
        lines = out.splitlines()
        self.events = [line for line in lines if line.startswith("data:")]
        self.error = next((line for line in lines if line.startswith("error")), None)
        if self.error is None and (not self.events or self.events[-1] != "data: [DONE]"):
            self.error = "ended without [DONE]"


def test_a_removed_instance_drains_its_stream_then_stops(tmp_path):
    port = free_port()

    async def scenario() -> None:
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
        supervisor.accept(1, [upstream_spec(port, drain_seconds=30)])
        assert await until(supervisor, lambda: supervisor.instances["up-0"].state == "Running", 30)
        pid = supervisor.instances["up-0"].pid
        stream = Stream(port, chunks=20, delay=0.2)  # about 4 s
        await asyncio.sleep(0.5)
        supervisor.accept(2, [])
        await supervisor.step()
        (shown,) = supervisor.observed({}, {})
        assert shown.state == "Draining" and psutil.pid_exists(pid)
        assert await until(supervisor, lambda: not supervisor.draining, 30)
        stream.join(5)
        assert stream.error is None and stream.events[-1] == "data: [DONE]" and len(stream.events) == 21
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert supervisor.observed({}, {}) == []
        await supervisor.close()

    asyncio.run(scenario())


def test_drain_seconds_bound_the_wait_and_a_wanted_instance_is_kept(tmp_path):
    port = free_port()

    async def scenario() -> None:
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
        wanted = upstream_spec(port, drain_seconds=3)
        supervisor.accept(1, [wanted])
        assert await until(supervisor, lambda: supervisor.instances["up-0"].state == "Running", 30)
        pid = supervisor.instances["up-0"].pid
        stream = Stream(port, chunks=200, delay=0.1)  # 20 s: longer than the drain allows
        await asyncio.sleep(0.5)
        supervisor.accept(2, [])  # scaled down ...
        await until(supervisor, lambda: False, 2.6)  # past the minimum wait for the routers
        assert "1 client connection(s) open" in supervisor.draining["up-0"].message
        supervisor.accept(3, [wanted])  # ... and up again while it drains: the same process serves on
        await supervisor.step()
        assert supervisor.instances["up-0"].pid == pid and not supervisor.draining
        supervisor.accept(4, [])
        started = time.monotonic()
        assert await until(supervisor, lambda: not supervisor.draining, 30)
        assert time.monotonic() - started < 15  # drainSeconds (3) + the stop grace, not the stream's 20 s
        stream.join(10)
        assert stream.error is not None
        await supervisor.close()

    asyncio.run(scenario())
