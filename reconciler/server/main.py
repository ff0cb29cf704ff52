"""Run the server: the reconcile loop, the leader lease, its API, and (the router's hook) one
more ASGI app, all in one event loop. Planning runs in a separate process, so neither API
stalls on it. The data dir (and a SQLite store) is locked for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from reconciler.agent import read_or_create_token
from reconciler.server import locks
from reconciler.server.agent_watch import follow_agents
from reconciler.server.api import create_app
from reconciler.server.lease import Identity, Lease
from reconciler.server.listen import check_free, listener
from reconciler.server.loop import OnState, Reconciler, Source, warm_up
from reconciler.server.orphans import die_with_parent
from reconciler.server.store import Store, default_url, sqlite_path
from reconciler.source import DirSource, GitSource

log = logging.getLogger("reconciler.server")


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "0.0.0.0"
    port: int = 10160
    store_url: str | None = None
    webhook_secret: bytes | None = None
    agent_token: str | None = None
    worker_poll: float = 10.0
    server_id: str | None = None  # unique among the servers of one store [default: hostname:port]
    lease_renew: float = 2.0

    def identity(self) -> Identity:
        name = socket.gethostname()
        reach = name if self.host in ("0.0.0.0", "::", "") else self.host
        return Identity(self.server_id or f"{name}:{self.port}", f"http://{reach}:{self.port}")


@dataclass(frozen=True)
class HostedApp:
    """An extra ASGI app served by the same process and loop (the router)."""

    app: Any
    port: int
    host: str = "0.0.0.0"
    options: Mapping[str, Any] = field(default_factory=dict)  # more uvicorn settings (the router's limits)


class _Main(uvicorn.Server):
    """Stops on SIGINT/SIGTERM without re-raising the signal afterwards, so clean-up runs."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Guest(uvicorn.Server):
    """A second uvicorn server: the first one owns the signal handlers and the shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def server_file(data_dir: Path) -> Path:
    return data_dir / "server.json"


def claim(config: ServerConfig, url: str) -> list[int]:
    """The data dir's lock, and the SQLite file's when the store is one; raises locks.InUse."""
    held = [locks.hold(config.data_dir / "server.lock", str(config.data_dir), "stop it or use another --data-dir")]
    database = sqlite_path(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            held.append(
                locks.hold(
                    database.with_name(database.name + ".lock"),
                    f"the SQLite store {database}",
                    "SQLite cannot hold a leader lease across servers: give several servers one "
                    "PostgreSQL store (--store-url postgresql+psycopg://...)",
                )
            )
        except locks.InUse:
            os.close(held[0])
            raise
    return held


async def serve(
    config: ServerConfig,
    source: Source,
    *,
    on_state: OnState | None = None,
    router: HostedApp | None = None,
    on_store: Callable[[Store], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. ``on_store`` sees the store once it is open (the router's usage)."""
    data = config.data_dir
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = config.store_url or default_url(data)
    check_free(config.host, config.port)
    if router is not None:
        check_free(router.host, router.port)
    held = claim(config, url)
    try:
        await _serve(config, source, Store(url), on_state, router, on_store)
    finally:
        for fd in held:
            os.close(fd)


async def _serve(
    config: ServerConfig,
    source: Source,
    store: Store,
    on_state: OnState | None,
    router: HostedApp | None,
    on_store: Callable[[Store], None] | None,
) -> None:
    token_sha256, token_path = read_or_create_token(None, config.data_dir)
    if on_store is not None:
        on_store(store)
    planner = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent)
    # Started (and the planner's modules imported) now: a follower that takes over plans at once.
    planner.submit(warm_up)
    lease = Lease(store, config.identity(), config.lease_renew)
    rec = Reconciler(
        source,
        store,
        config.agent_token,
        lease=lease,
        on_state=on_state,
        worker_poll=config.worker_poll,
        planner=planner,
    )
    if router is not None:
        rec.router_url = f"http://{_client_host(router.host)}:{router.port}"
    app = create_app(rec, token_sha256, config.webhook_secret)
    main = _Main(listener(app, config.host, config.port))
    guest = _Guest(uvicorn.Config(router.app, host=router.host, port=router.port, **router.options)) if router else None
    await asyncio.to_thread(lease.step)  # a lone server (or the first of several) leads from its first pass
    leading = [asyncio.create_task(rec.hold_lease(), name="lease"), asyncio.create_task(rec.run(), name="reconcile")]
    tasks = [*leading, asyncio.create_task(_step_down_on_exit(main, lease, leading), name="step down")]
    if isinstance(source, DirSource | GitSource):
        tasks.append(asyncio.create_task(_follow(source, rec), name="watch"))
    tasks.append(asyncio.create_task(follow_agents(rec, config.agent_token), name="agents"))
    guest_task = asyncio.create_task(guest.serve()) if guest else None
    tasks.append(asyncio.create_task(_announce(main, config, rec.router_url, token_path), name="announce"))
    try:
        await main.serve()
    finally:
        if guest is not None and guest_task is not None:
            guest.should_exit = True
            await guest_task
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _forget(config.data_dir)
        await _release(lease)
        planner.shutdown(cancel_futures=True)
        store.close()


async def _step_down_on_exit(main: uvicorn.Server, lease: Lease, leading: list[asyncio.Task[None]]) -> None:
    """On SIGTERM/SIGINT stop the loop and release the lease first: a follower takes over at its
    next try, while this server still drains its HTTP connections."""
    while not main.should_exit:
        await asyncio.sleep(0.05)
    for task in leading:
        task.cancel()
    await asyncio.gather(*leading, return_exceptions=True)
    await _release(lease)


async def _release(lease: Lease) -> None:
    with contextlib.suppress(Exception):  # the store may be gone; the lease then lapses by itself
        await asyncio.to_thread(lease.release)


async def _follow(source: DirSource | GitSource, rec: Reconciler) -> None:
    async for _ in source.changes():
        rec.trigger()


async def _announce(main: uvicorn.Server, config: ServerConfig, router_url: str | None, token_path: Path) -> None:
    """Write <data-dir>/server.json once the API listens: how client commands find it."""
    while not main.started:
        await asyncio.sleep(0.05)
    body = {
        "url": f"http://{_client_host(config.host)}:{config.port}",
        "routerUrl": router_url,
        "pid": os.getpid(),
        "tokenFile": str(token_path),
    }
    path = server_file(config.data_dir)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(body) + "\n", encoding="utf-8")
    temporary.replace(path)
    log.info("server listening on %s; token in %s", body["url"], token_path)


def _forget(data_dir: Path) -> None:
    path = server_file(data_dir)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def run_server(
    config: ServerConfig,
    source: Source,
    *,
    on_state: OnState | None = None,
    router: HostedApp | None = None,
    on_store: Callable[[Store], None] | None = None,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per agent call every poll is noise
    asyncio.run(serve(config, source, on_state=on_state, router=router, on_store=on_store))
