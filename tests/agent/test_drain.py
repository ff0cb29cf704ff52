"""Drain before stop, with real processes: an OpenAI-shaped upstream as the instance, a real
streaming client on it, the supervisor retiring it (and a new supervisor on the same data dir,
as a restarted agent, finishing the drain)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from reconciler.agent.files import ModelFiles
from reconciler.agent.record import AgentRecord, DrainRecord, load_record, save_record
from reconciler.agent.supervisor import Supervisor
from reconciler.observe import InstanceSpec
from tests.net import free_port

UPSTREAM = Path(__file__).resolve().parents[1] / "router" / "upstream.py"


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

    def first_event(self) -> str:
        """Blocks until the stream is under way: its first event (or its error line)."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline().rstrip("\n")
        self.events.append(line)
        return line

    def join(self, seconds: float) -> None:
        out, _ = self.process.communicate(timeout=seconds)
        lines = [*self.events, *out.splitlines()]
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
        assert stream.first_event().startswith("data:")
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
        assert stream.first_event().startswith("data:")
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


async def draining_then_dead(
    tmp_path: Path, spec: InstanceSpec, stream_chunks: int
) -> tuple[subprocess.Popen[bytes], Stream]:
    """An agent that starts the instance, has a stream open on it, drains it, and dies. Its
    handle on the process is returned, so the test reaps it once a later agent stopped it."""
    supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
    supervisor.accept(1, [spec])
    assert await until(supervisor, lambda: supervisor.instances["up-0"].state == "Running", 30)
    popen = supervisor.instances["up-0"].popen
    assert popen is not None
    stream = Stream(spec.port, chunks=stream_chunks, delay=0.2)
    assert stream.first_event().startswith("data:")
    supervisor.accept(2, [])
    await supervisor.step()
    assert [(i.id, i.state) for i in supervisor.observed({}, {})] == [("up-0", "Draining")]
    await supervisor.close()  # the agent is gone; its process is not
    return popen, stream


def restarted(tmp_path: Path) -> Supervisor:
    supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
    supervisor.adopt()
    return supervisor


def test_a_drain_survives_an_agent_restart(tmp_path):
    async def scenario() -> None:
        popen, stream = await draining_then_dead(tmp_path, upstream_spec(free_port(), drain_seconds=60), 30)  # 6 s
        supervisor = restarted(tmp_path)
        assert [(i.id, i.state, i.pid) for i in supervisor.observed({}, {})] == [("up-0", "Draining", popen.pid)]
        assert await until(supervisor, lambda: not supervisor.draining, 60)
        stream.join(10)
        assert stream.error is None and stream.events[-1] == "data: [DONE]" and len(stream.events) == 31
        popen.wait(timeout=10)  # stopped by the drain's end
        assert supervisor.observed({}, {}) == [] and load_record(tmp_path / "state.json").draining == {}
        await supervisor.close()

    asyncio.run(scenario())


def test_a_drain_past_its_deadline_after_a_restart_stops_at_once(tmp_path):
    async def scenario() -> None:
        popen, stream = await draining_then_dead(tmp_path, upstream_spec(free_port(), drain_seconds=3600), 300)
        record = load_record(tmp_path / "state.json")
        # The agent was down past the deadline (wall-clock time, so the test can write it).
        late = {"up-0": record.draining["up-0"].model_copy(update={"deadline": time.time() - 1})}
        save_record(tmp_path / "state.json", record.model_copy(update={"draining": late}))
        supervisor = restarted(tmp_path)
        assert [(i.id, i.state) for i in supervisor.observed({}, {})] == [("up-0", "Draining")]
        assert await until(supervisor, lambda: not supervisor.draining, 30)  # not the stream's 60 s
        popen.wait(timeout=10)
        stream.join(10)
        assert stream.error is not None
        await supervisor.close()

    asyncio.run(scenario())


def test_wanted_back_after_a_restart_keeps_the_draining_process(tmp_path):
    spec = upstream_spec(free_port(), drain_seconds=60)

    async def scenario() -> None:
        popen, stream = await draining_then_dead(tmp_path, spec, 40)  # 8 s
        second = restarted(tmp_path)
        second.accept(3, [spec])  # scaled up again: the same process serves on
        await second.step()
        assert second.instances["up-0"].pid == popen.pid and not second.draining
        await second.close()
        third = restarted(tmp_path)  # and the agent after that adopts it as an instance
        assert (third.instances["up-0"].pid, third.instances["up-0"].state) == (popen.pid, "Starting")
        assert await until(third, lambda: third.instances["up-0"].state == "Running", 30)
        third.accept(4, [])
        assert await until(third, lambda: not third.draining and not third.instances, 60)
        stream.join(10)
        assert stream.error is None and stream.events[-1] == "data: [DONE]" and len(stream.events) == 41
        popen.wait(timeout=10)
        await third.close()

    asyncio.run(scenario())


def test_records_with_and_without_drains_load(tmp_path):
    path = tmp_path / "state.json"
    before = {"epoch": 0, "generation": 3, "instances": [], "processes": {}}  # as the version before wrote it
    path.write_text(json.dumps(before))
    assert load_record(path) == AgentRecord(generation=3)
    save_record(path, AgentRecord(generation=3))
    assert json.loads(path.read_text()) == before  # so that version can still read it (it refuses unknown fields)
    spec = upstream_spec(1, drain_seconds=30)
    drain = DrainRecord(spec=spec, pid=1, create_time=1.0, deadline=2.0)
    save_record(path, AgentRecord(generation=4, draining={"up-0": drain}))
    assert load_record(path).draining == {"up-0": drain}
