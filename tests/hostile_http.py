"""A local HTTP server that answers badly on purpose and records what it was sent.

Behaviours: ``record`` (a JSON body), ``trickle-headers`` and ``trickle-body`` (one byte every
``pause`` seconds, without end), ``endless`` (a body that never ends, as fast as it goes),
``whole`` (ignores Range: the whole ``body``, status 200).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Seen:
    requests: list[str] = field(default_factory=list)  # the request line and headers, as sent

    def authorization(self) -> list[str]:
        return [
            line
            for request in self.requests
            for line in request.split("\r\n")
            if line.lower().startswith("authorization:")
        ]


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        self.server.seen.requests.append(data.split(b"\r\n\r\n")[0].decode("latin-1"))
        try:
            self.server.answer(sock)
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour: str, body: bytes, pause: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour, self.body, self.pause = behaviour, body, pause
        self.seen = Seen()
        self.stop = threading.Event()

    def answer(self, sock: socket.socket) -> None:
        if self.behaviour == "trickle-headers":
            self._trickle(sock, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100000)
        elif self.behaviour == "trickle-body":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            self._trickle(sock, b"{" * 100000)
        elif self.behaviour == "endless":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 65536
            while not self.stop.is_set():
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:  # record, whole: the body, status 200, Range or not
            head = (  # one request per connection: the client must not reuse it
                f"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + self.body)

    def _trickle(self, sock: socket.socket, data: bytes) -> None:
        for byte in data:
            if self.stop.wait(self.pause):
                return
            sock.sendall(bytes([byte]))


@contextmanager
def hostile(behaviour: str, body: bytes = b"{}", pause: float = 0.5) -> Iterator[tuple[str, Seen]]:
    """``(url, seen)`` of a server that answers every request the way ``behaviour`` says."""
    server = _Server(behaviour, body, pause)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
