"""The server's listeners (API, hosted router): a deadline on request headers, an idle timeout
and a connection limit, so slow or idle clients cannot hold every descriptor (issue 16.10).
uvicorn has the idle timeout and the limit; the header deadline is the protocol below.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from reconciler.server.locks import InUse

HEADER_TIMEOUT = 10.0  # seconds from a connection's start, or a request's first byte, to its last header
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 512  # past it, new requests get 503 rather than the process's last descriptors


class HeaderDeadline(HttpToolsProtocol):
    """Closes a connection whose request headers are not complete within ``header_timeout``."""

    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout, self._too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def listener(app: Any, host: str, port: int, header_timeout: float = HEADER_TIMEOUT) -> uvicorn.Config:
    """uvicorn settings every listener of the server shares."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": header_timeout}),
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=MAX_CONNECTIONS,
    )


def check_free(host: str, port: int) -> None:
    """Raise InUse (one line, exit 1) when ``host:port`` cannot be listened on; uvicorn would exit 3."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InUse(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
