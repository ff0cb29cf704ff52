"""Serving the router: uvicorn on uvloop and httptools, with a deadline on request headers,
an idle timeout and a connection limit, so slow or idle clients cannot hold every descriptor.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from reconciler.server.listen import HeaderDeadline

HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 4096


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
