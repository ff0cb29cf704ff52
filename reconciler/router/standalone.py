"""The router on its own: serve it, and refresh its table from the live agents in a thread.

``reconcile up`` / ``serve`` use the server's observation instead; this is ``reconcile router``.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable

import uvicorn

from reconciler.observe import ObservedState, observe_agents
from reconciler.router.app import Router
from reconciler.router.table import RoutingTable, build_table
from reconciler.spec import Desired

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_address(has_keys: bool, requested: str | None) -> str:
    """Where to listen: loopback only without API keys (raises ValueError for anything else)."""
    address = requested or ("0.0.0.0" if has_keys else "127.0.0.1")
    if not has_keys and not is_loopback(address):
        raise ValueError(
            f"{address}: no API keys in the Cluster manifest, so the router listens on loopback only "
            "(add keys with `reconcile keys new NAME`)"
        )
    return address


def poll_agents(
    desired: Desired,
    token: str | None,
    update: Callable[[RoutingTable], None],
    interval_s: float,
    stop: threading.Event,
    observe: Callable[[Desired, str | None], ObservedState] = lambda d, t: observe_agents(d.cluster.spec.agents, t),
) -> None:
    """Observe, rebuild the table, swap it in; until ``stop`` is set."""
    while not stop.is_set():
        try:
            update(build_table(desired, observe(desired, token)))
        except Exception:  # a bad poll must not stop routing on the last good table
            log.exception("observing the agents failed; keeping the previous routing table")
        stop.wait(interval_s)


def run_router(router: Router, desired: Desired, token: str | None, host: str, port: int, interval_s: float) -> None:
    """Serve until interrupted (uvloop and httptools when installed, as uvicorn picks them)."""
    stop = threading.Event()
    poller = threading.Thread(
        target=poll_agents, args=(desired, token, router.update_table, interval_s, stop), daemon=True
    )
    poller.start()
    try:
        uvicorn.run(
            router, host=host, port=port, log_level="warning", lifespan="on", access_log=False, proxy_headers=False
        )
    finally:
        stop.set()
