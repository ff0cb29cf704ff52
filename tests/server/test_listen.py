"""The server's listener drops a client that never finishes its headers (issue 16.10)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from reconciler.server.listen import listener
from tests.server.test_hosting import free_port


@pytest.fixture
def server() -> Iterator[int]:
    app = Starlette(routes=[Route("/", lambda _r: PlainTextResponse("ok"))])
    port = free_port()
    running = uvicorn.Server(listener(app, "127.0.0.1", port, header_timeout=0.5))
    thread = threading.Thread(target=asyncio.run, args=(running.serve(),), daemon=True)
    thread.start()
    while not running.started:
        time.sleep(0.02)
    yield port
    running.should_exit = True
    thread.join(timeout=10)


def test_headers_that_never_end_are_cut_off(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 4
    with socket.create_connection(("127.0.0.1", server), timeout=5) as silent:
        assert silent.recv(1024) == b""  # a connection that sends nothing is closed too
    assert httpx.get(f"http://127.0.0.1:{server}/").text == "ok"  # a whole request is served
