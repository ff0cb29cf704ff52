"""The supervisor with real processes and a clock the test moves."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from reconciler.agent.files import ModelFiles
from reconciler.agent.supervisor import (
    DATA_DIR_ENV,
    INSTANCE_ENV,
    PROBE_INTERVAL,
    STABLE_RUNNING,
    STARTING_PROBE_INTERVAL,
    Supervisor,
    backoff,
)
from reconciler.observe import InstanceSpec
from tests.net import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(instance_id: str, code: str, restart: bool = True, port: int = 1) -> InstanceSpec:
    return InstanceSpec(
        id=instance_id,
        model="m",
        backend="custom",
        argv=[sys.executable, "-c", code],
        port=port,
        health_path="",
        restart_on_error=restart,
        spec_hash=f"h-{instance_id}-{hash(code)}",
    )


async def settle(supervisor: Supervisor, steps: int = 40) -> None:
    for _ in range(steps):
        await supervisor.step()
        await asyncio.sleep(0.05)


def test_backoff():
    assert [backoff(n) for n in range(0, 9)] == [0, 0, 10, 20, 40, 80, 160, 300, 300]


def test_a_backend_failing_at_every_start_is_retried_once_at_once_then_backs_off(tmp_path):
    async def scenario() -> None:
        clock = Clock()  # frozen unless the test moves it: only the backoff can space the starts
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"), clock)
        assert supervisor.accept(1, [spec("crash", "import sys; print('boom'); sys.exit(3)")]) == "accepted"
        await settle(supervisor)
        instance = supervisor.instances["crash"]
        assert instance.state == "Error" and instance.exit_code == 3
        assert "exited with code 3" in instance.message and "boom" in instance.message
        # The first failure was retried at once; the second waits 10 s, and nothing loops meanwhile.
        assert (instance.restarts, instance.failures, instance.retry_at) == (1, 2, clock.now + 10)
        clock.now += 9
        await settle(supervisor, 5)
        assert instance.restarts == 1
        clock.now += 1
        await settle(supervisor)
        assert instance.restarts == 2 and instance.state == "Error"
        assert instance.retry_at == clock.now + 20  # the third failure in a row waits twice as long
        log = (tmp_path / "log" / "serve" / "crash.log").read_text()
        assert log.count("--- reconciler: starting crash") == 3
        await supervisor.close()

    asyncio.run(scenario())


def test_the_failure_count_resets_once_running_is_stable(tmp_path):
    port = free_port()
    listen = (
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(120)"
    )

    async def scenario() -> None:
        clock = Clock()
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"), clock)
        supervisor.accept(1, [spec("srv", listen, port=port)])

        async def running() -> None:
            """Moves the clock by the Starting probe interval until a probe finds it listening."""
            for _ in range(200):
                await supervisor.step()
                srv = supervisor.instances["srv"]
                if srv.state == "Running":
                    assert srv.next_probe == clock.now + PROBE_INTERVAL
                    return
                if srv.state == "Starting" and srv.next_probe > clock.now:
                    assert srv.next_probe <= clock.now + STARTING_PROBE_INTERVAL
                    clock.now += STARTING_PROBE_INTERVAL
                await asyncio.sleep(0.05)
            raise AssertionError(supervisor.instances["srv"])

        async def kill() -> None:
            srv = supervisor.instances["srv"]
            os.kill(srv.pid, signal.SIGKILL)
            for _ in range(100):
                await supervisor.step()
                if srv.state == "Error":
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(srv)

        await running()
        srv = supervisor.instances["srv"]
        await kill()  # the first failure: started again at once
        assert srv.retry_at == clock.now
        await supervisor.step()
        assert (srv.state, srv.restarts) == ("Starting", 1)
        await running()
        await kill()  # dead again before it ran STABLE_RUNNING: no second immediate start
        assert (srv.failures, srv.retry_at) == (2, clock.now + 10)
        clock.now += 10
        await running()
        clock.now += STABLE_RUNNING
        os.kill(srv.pid, signal.SIGKILL)
        srv.popen.wait()  # dead before any step saw the stable run end: the exit still counts it
        await supervisor.step()
        assert srv.state == "Error"  # after a stable run, a failure is a first one again
        assert (srv.failures, srv.retry_at, srv.restarts) == (1, clock.now, 2)
        await supervisor.step()
        assert (srv.state, srv.restarts) == ("Starting", 3)
        supervisor.accept(2, [])
        await settle(supervisor, 10)
        await supervisor.close()

    asyncio.run(scenario())


def test_no_restart_when_restart_on_error_is_off(tmp_path):
    async def scenario() -> None:
        clock = Clock()
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"), clock)
        supervisor.accept(1, [spec("once", "raise SystemExit(1)", restart=False)])
        await settle(supervisor)
        clock.now += 1000
        await settle(supervisor)
        assert supervisor.instances["once"].restarts == 0
        await supervisor.close()

    asyncio.run(scenario())


def test_a_finished_fetch_wakes_the_loop_so_the_start_does_not_wait_for_the_idle_tick(tmp_path):
    async def scenario() -> None:
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"), Clock())
        supervisor.accept(1, [spec("a", "import time; time.sleep(60)")])
        await supervisor.step()
        instance = supervisor.instances["a"]
        assert instance.state == "Downloading" and instance.fetch is not None
        supervisor.wake.clear()
        await instance.fetch
        assert supervisor.wake.is_set()
        await supervisor.step()
        assert instance.state == "Starting" and instance.pid is not None
        await supervisor.stop(instance)
        await supervisor.close()

    asyncio.run(scenario())


def test_generations(tmp_path):
    supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
    first = [spec("a", "pass")]
    assert supervisor.accept(5, first) == "accepted"
    assert supervisor.accept(5, first) == "unchanged"
    assert supervisor.accept(4, []) == "stale"
    assert supervisor.accept(5, []) == "stale"
    assert supervisor.accept(6, first) == "unchanged"
    assert supervisor.record.generation == 6


# The first supervisor stands for an agent that dies: its handle on a running child is dropped.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_adopts_running_process_and_kills_orphans(tmp_path):
    sleeper = "import time; time.sleep(120)"
    # An instance with a child (as vLLM's workers): the child carries the instance's markers too.
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {sleeper!r}]); time.sleep(120)"

    async def start() -> tuple[int, int]:
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
        supervisor.accept(1, [spec("keep", parent)])
        for _ in range(100):
            await supervisor.step()
            pid = supervisor.instances["keep"].pid
            if pid is not None and psutil.Process(pid).children():
                break
            await asyncio.sleep(0.05)
        (child,) = psutil.Process(pid).children()
        await supervisor.close()
        return pid, child.pid

    pid, child = asyncio.run(start())
    orphan = subprocess.Popen(
        [sys.executable, "-c", sleeper],
        start_new_session=True,
        env={**os.environ, INSTANCE_ENV: "gone", DATA_DIR_ENV: str(tmp_path)},
    )
    try:
        time.sleep(0.5)

        async def restart() -> None:
            supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
            supervisor.adopt()
            assert supervisor.instances["keep"].pid == pid
            assert orphan.wait(timeout=10) == -signal.SIGKILL
            assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and psutil.pid_exists(child)
            supervisor.accept(2, [])
            await settle(supervisor, 5)
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            await supervisor.close()

        asyncio.run(restart())
    finally:
        for process in (orphan,):
            if process.poll() is None:
                process.kill()
        for leftover in (pid, child):
            if psutil.pid_exists(leftover):
                os.kill(leftover, signal.SIGKILL)


def test_changed_spec_replaces_only_that_instance(tmp_path):
    sleeper = "import time; time.sleep(120)"

    async def scenario() -> None:
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
        supervisor.accept(1, [spec("a", sleeper), spec("b", sleeper)])
        await settle(supervisor, 10)
        a_pid, b_pid = supervisor.instances["a"].pid, supervisor.instances["b"].pid
        supervisor.accept(2, [spec("a", sleeper + " # changed"), spec("b", sleeper)])
        await settle(supervisor, 10)
        assert supervisor.instances["b"].pid == b_pid
        assert supervisor.instances["a"].pid not in (None, a_pid)
        supervisor.accept(3, [])
        await settle(supervisor, 10)
        assert supervisor.instances == {}
        await supervisor.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("lines", [0, 3])
def test_logs_are_kept_per_instance(tmp_path, lines):
    async def scenario() -> None:
        supervisor = Supervisor(tmp_path, ModelFiles(tmp_path / "cache"))
        supervisor.accept(1, [spec("talk", "print('one'); print('two'); print('three')", restart=False)])
        await settle(supervisor)
        await supervisor.close()

    asyncio.run(scenario())
    log = tmp_path / "log" / "serve" / "talk.log"
    assert log.read_text().splitlines()[-3:] == ["one", "two", "three"]
