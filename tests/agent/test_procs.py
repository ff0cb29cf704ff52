"""Listening sockets from sock_diag against psutil's reading of /proc, on real sockets."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from reconciler.agent.procs import _psutil_listeners, _psutil_listening, listeners, tree_listening
from reconciler.agent.sockdiag import listening_sockets

CHILD = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.fixture
def sockets() -> Iterator[dict[str, object]]:
    """A v4 and a v6 listener here, a listener in a child, and a connection (not listening)."""
    v4 = socket.create_server(("127.0.0.1", 0))
    v6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    client = socket.create_connection(v4.getsockname()[:2])
    accepted, _ = v4.accept()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    child_port = int(child.stdout.readline())
    try:
        yield {
            "v4": v4.getsockname()[1],
            "v6": v6.getsockname()[1],
            "client": client.getsockname()[1],
            "child": child_port,
            "child_pid": child.pid,
        }
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        for sock in (v4, v6, client, accepted):
            sock.close()


def test_sock_diag_lists_the_listening_ports_and_only_those(sockets):
    ports = set(listening_sockets().values())
    assert {sockets["v4"], sockets["v6"], sockets["child"]} <= ports
    assert sockets["client"] not in ports


def test_a_process_tree_listens_on_its_own_ports_only(sockets):
    here, child = psutil.Process(), psutil.Process(sockets["child_pid"])
    assert tree_listening([here]) == _psutil_listening([here]) >= {sockets["v4"], sockets["v6"]}
    assert tree_listening([child]) == _psutil_listening([child]) == {sockets["child"]}
    assert tree_listening([]) == set()


def test_listeners_name_the_same_holders_as_psutil(sockets):
    found = listeners()
    assert found[sockets["child"]] == {sockets["child_pid"]}
    assert found[sockets["v4"]] == found[sockets["v6"]] == {psutil.Process().pid}
    ours = (sockets["v4"], sockets["v6"], sockets["child"])
    assert {p: found[p] for p in ours} == {p: _psutil_listeners()[p] for p in ours}
