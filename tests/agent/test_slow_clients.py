"""Connections that never finish their headers cannot take the agent down (issue 16 item 10).

The agent runs with the descriptor limit of a default Linux login (1024), as in the report;
1,100 half-open connections on loopback, then /healthz must still answer, and a lone slow
connection is closed after the header timeout.
"""

from __future__ import annotations

import resource
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.agent.guard import HEADER_TIMEOUT, MAX_CONNECTIONS
from tests.agent.test_hostile import Agent

FLOOD = 1100
PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "  # the headers never end


class LimitedAgent(Agent):
    def start(self) -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        original = subprocess.Popen

        def limited(*args, **kwargs):  # type: ignore[no-untyped-def]
            kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
            return original(*args, **kwargs)

        subprocess.Popen = limited  # type: ignore[misc]
        try:
            super().start()
        finally:
            subprocess.Popen = original  # type: ignore[misc]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < FLOOD + 200:
        pytest.skip(f"this test opens {FLOOD} sockets; the descriptor limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, FLOOD + 200), hard))
    running = LimitedAgent(tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def half_open(port: int) -> socket.socket | None:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(PARTIAL)
        return sock
    except OSError:  # the backlog is full for a moment: the flood goes on
        return None


def test_half_open_connections_do_not_stop_healthz(agent: Agent) -> None:
    assert agent.process is not None
    limit = Path(f"/proc/{agent.process.pid}/limits").read_text()
    assert any(line.startswith("Max open files") and " 1024 " in line for line in limit.splitlines())
    flood = [sock for sock in (half_open(agent.port) for _ in range(FLOOD)) if sock is not None]
    try:
        assert len(flood) > MAX_CONNECTIONS * 2
        answer = httpx.get(f"{agent.url}/healthz", timeout=10)
        assert answer.status_code == 200
        open_fds = len(list(Path(f"/proc/{agent.process.pid}/fd").iterdir()))
        assert open_fds < 1024 - 100, open_fds  # the cap holds descriptors well below the limit
    finally:
        for sock in flood:
            sock.close()

    # One slow client alone: closed once the header timeout has passed, not held forever.
    slow = half_open(agent.port)
    assert slow is not None
    slow.settimeout(HEADER_TIMEOUT + 20)
    assert slow.recv(1024) == b""
    slow.close()
