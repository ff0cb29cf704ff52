"""A cheap OpenAI-shaped upstream on loopback, and a way to serve any ASGI app in a thread.

Used by the router's tests (counting, canary, failures) and by bench/router.py. Every answer
names the instance in the ``x-instance`` header so tests can count where requests went.
A request may ask for behaviour through extra body fields the router passes along untouched:
``delay`` (seconds before answering), ``chunks`` (stream length), ``chunk_delay``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


class FakeUpstream:
    """A raw ASGI app answering like an OpenAI server, recording what it received."""

    def __init__(self, name: str, status: int = 200) -> None:
        self.name = name
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.cancelled = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (message := await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body) if body.startswith(b"{") else {}
        self.received.append(request)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        head = [(b"x-instance", self.name.encode())]
        if self.status != 200:
            await _send(send, self.status, b'{"error": {"message": "down"}}', head)
            return
        try:
            await asyncio.sleep(float(request.get("delay", 0)))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        path = scope["path"]
        if path == "/v1/models":
            await _send(send, 200, json.dumps({"object": "list", "data": [{"id": self.name}]}).encode(), head)
        elif path == "/v1/embeddings":
            answer = {
                "object": "list",
                "data": [{"embedding": [0.1, 0.2], "index": 0}],
                "model": request["model"],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
            await _send(send, 200, json.dumps(answer).encode(), head)
        elif request.get("stream"):
            await self._watched(receive, self._stream(send, request, head))
        else:
            answer = {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": request.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
            await _send(send, 200, json.dumps(answer).encode(), head)

    async def _watched(self, receive: Any, work: Any) -> None:
        """Run ``work`` until the client disconnects, as real servers do; count the disconnects."""
        task = asyncio.ensure_future(work)
        while not task.done():
            waiter = asyncio.ensure_future(receive())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done() and waiter.result()["type"] == "http.disconnect":
                task.cancel()
                self.cancelled += 1
                break
            elif not waiter.done():
                waiter.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _stream(self, send: Any, request: dict[str, Any], head: list[tuple[bytes, bytes]]) -> None:
        headers = [(b"content-type", b"text/event-stream"), *head]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunks = int(request.get("chunks", 3))
        for index in range(chunks):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": request.get("model"),
                "choices": [{"index": 0, "delta": {"content": f"t{index}"}, "finish_reason": None}],
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n",
                    "more_body": True,
                }
            )
            await asyncio.sleep(float(request.get("chunk_delay", 0)))
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": request.get("model"),
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": chunks, "total_tokens": 5 + chunks},
            }
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + json.dumps(usage).encode() + b"\r\n\r\n",
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\r\n\r\n", "more_body": False})


async def _send(send: Any, status: int, body: bytes, head: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), *head]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Serve an ASGI app on a free loopback port in a thread; yields its base URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def main() -> None:
    """Run one upstream as its own process: ``python tests/router/upstream.py --port P [--name N]``
    (a ``custom`` Model's command in e2e tests and benches)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="upstream")
    args = parser.parse_args()
    uvicorn.run(FakeUpstream(args.name), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
