"""Serving the router: uvicorn on uvloop and httptools, with a deadline on request headers,
an idle timeout and a connection limit, so slow or idle clients cannot hold every descriptor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 4096


class HeaderDeadline(HttpToolsProtocol):
    """Closes a connection whose request headers are not complete within ``header_timeout``
    of its start or of the request's first byte (uvicorn has an idle timeout, not this one)."""

    header_timeout = HEADER_TIMEOUT_S

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


def guarded(header_timeout: float) -> type[HeaderDeadline]:
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": header_timeout})


def limits(
    header_timeout: float = HEADER_TIMEOUT_S,
    idle_timeout: float = IDLE_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> dict[str, Any]:
    """uvicorn settings for any router listener: bounded clients, no access log, no proxy headers."""
    return {
        "http": guarded(header_timeout),
        "timeout_keep_alive": int(idle_timeout),
        "limit_concurrency": max_connections,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
    }


def serve_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT_S,
    idle_timeout: float = IDLE_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> uvicorn.Config:
    """The router process's listener: uvloop, and the limits above."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        lifespan="on",
        log_level="warning",
        **limits(header_timeout, idle_timeout, max_connections),
    )
