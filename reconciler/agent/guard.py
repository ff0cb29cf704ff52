"""The HTTP front guard: a header timeout and a connection cap per listener.

uvicorn closes an idle keep-alive connection, but a connection that sends a byte and
then never finishes its headers is held forever: about 1,000 of them take every
descriptor of the process and /healthz stops answering. This protocol (uvicorn's
httptools protocol, subclassed) gives every request ``HEADER_TIMEOUT`` seconds from
the moment the connection opens, or the last response ends, to finish its headers,
and holds at most ``MAX_CONNECTIONS``: past that, a new connection makes room by
closing the one that has waited longest without a request in progress, so a flood of
half-open connections cannot lock a real client out.

Use it with ``uvicorn.run(app, http=GuardedHttpProtocol)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT = 10.0
MAX_CONNECTIONS = 256


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = None  # set while no request's headers are complete
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._await_headers()

    def _await_headers(self) -> None:
        self._stop_waiting()
        self.waiting_since = self.loop.time()
        self.header_timer = self.loop.call_later(HEADER_TIMEOUT, self._headers_too_slow)

    def _stop_waiting(self) -> None:
        self.waiting_since = None
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.waiting_since is not None and not self.transport.is_closing():
            self.transport.abort()

    def _make_room(self) -> None:
        """Past the cap, close the connection that has waited longest for headers (this one last)."""
        live = [c for c in self.connections if isinstance(c, GuardedHttpProtocol) and not c.transport.is_closing()]
        if len(live) <= MAX_CONNECTIONS:
            return
        idle = [c for c in live if c is not self and c.waiting_since is not None]
        victim = min(idle, key=lambda c: c.waiting_since or 0.0) if idle else self
        victim._stop_waiting()
        victim.transport.abort()


__all__ = ["HEADER_TIMEOUT", "MAX_CONNECTIONS", "GuardedHttpProtocol"]
