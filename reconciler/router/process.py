"""``reconcile router``: the router as its own process, fed by the servers' routing-table watch.

Stateless: any number of copies can run. It keeps routing on its last table while no server
answers, and its members on their own health checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from reconciler.router.app import MAX_BODY_BYTES, Router
from reconciler.router.link import ServerUsage, TableWatch
from reconciler.router.listener import HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_CONNECTIONS, serve_config
from reconciler.router.metrics import RouterMetrics

PROBE_INTERVAL_S = 2.0
FIRST_TABLE_WAIT_S = 10.0  # a router listens once it has a table, or after this long without one


@dataclass(frozen=True)
class RouterSettings:
    servers: Sequence[str]
    token: str | None
    host: str = "127.0.0.1"
    port: int = 10170
    allow_anonymous: bool = False
    timeout_s: float = 1800.0
    max_inflight: int = 256
    max_body_bytes: int = MAX_BODY_BYTES
    header_timeout_s: float = HEADER_TIMEOUT_S
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    probe_interval_s: float = PROBE_INTERVAL_S
    table_file: Path | None = None  # the last table, kept to start from while no server answers


def advertised(host: str, port: int) -> str:
    """The URL this router gives the server for status: a wildcard bind answers on loopback."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def build_router(settings: RouterSettings) -> tuple[Router, TableWatch, ServerUsage]:
    metrics = RouterMetrics()
    usage = ServerUsage(settings.servers, settings.token)
    holder: list[Router] = []
    watch = TableWatch(
        settings.servers,
        settings.token,
        lambda table: holder[0].update_table(table),
        metrics,
        advertised(settings.host, settings.port),
        settings.table_file,
    )
    router = Router(
        usage,
        timeout_s=settings.timeout_s,
        max_inflight_per_instance=settings.max_inflight,
        max_body_bytes=settings.max_body_bytes,
        allow_anonymous=settings.allow_anonymous,
        probe_interval_s=settings.probe_interval_s,
        health=watch.state.health,
        companions=(watch.run,),
        metrics=metrics,
        first_table_wait_s=FIRST_TABLE_WAIT_S,
    )
    holder.append(router)
    return router, watch, usage


def run_router_process(settings: RouterSettings) -> None:
    """Serve until SIGINT/SIGTERM; the last usage is reported on the way out."""
    router, _, usage = build_router(settings)
    config = serve_config(
        router,
        settings.host,
        settings.port,
        header_timeout=settings.header_timeout_s,
        idle_timeout=settings.idle_timeout_s,
        max_connections=settings.max_connections,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        usage.close()
