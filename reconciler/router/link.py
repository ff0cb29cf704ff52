"""The router's link to the server(s): follow the routing table, report usage.

Neither ever stops routing. While no server answers, the router keeps its last table, says it
is stale (``/healthz``, ``reconciler_router_table_stale``) and retries with backoff, going
through the ``--server`` URLs in turn. Usage batches that could not be delivered are kept
(bounded) and sent again with the same batch id, which the server uses to drop duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from reconciler.router.metrics import RouterMetrics
from reconciler.router.table import DocInvalid, RoutingTable, table_from_doc
from reconciler.router.usage import UsageSum

log = logging.getLogger("reconciler.router")

WATCH_WAIT_S = 5.0  # how long the server holds a watch open without a change (a change comes at once)
MAX_TABLE_BYTES = 64 * 1024 * 1024
MAX_BACKOFF_S = 2.0  # a failed try costs a refused connect; a server back is confirmed within 2 s
KEPT_BATCHES = 100_000  # undelivered usage batches kept while no server answers (one a second)


def backoff(failures: int) -> float:
    """Seconds before the next try after ``failures`` failures in a row, with jitter."""
    return min(0.25 * 2.0 ** max(failures - 1, 0), MAX_BACKOFF_S) * (0.75 + 0.5 * random.random())


@dataclass
class TableState:
    """What /healthz and the metrics say about the table."""

    version: int = 0
    digest: str = ""
    server: str = ""
    stale: bool = True
    error: str = "no table yet"
    received_at: float | None = None  # monotonic time of the last contact that confirmed the table
    servers: tuple[str, ...] = field(default=())

    def health(self) -> dict[str, object]:
        age = None if self.received_at is None else round(time.monotonic() - self.received_at, 1)
        return {
            "status": "stale" if self.stale else "ok",
            "tableVersion": self.version,
            "tableAgeSeconds": age,
            "server": self.server,
            "error": self.error if self.stale else "",
        }


class TableWatch:
    """Long-polls ``GET /api/routing`` and hands each new table to ``offer``."""

    def __init__(
        self,
        servers: Sequence[str],
        token: str | None,
        offer: Callable[[RoutingTable], None],
        metrics: RouterMetrics,
        advertise: str = "",
        table_file: Path | None = None,
    ) -> None:
        self.servers = [s.rstrip("/") for s in servers]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.offer = offer
        self.metrics = metrics
        self.advertise = advertise
        self.table_file = table_file
        self.state = TableState(servers=tuple(self.servers))

    def resume(self) -> None:
        """Start from the table kept in ``table_file`` (stale until a server confirms it)."""
        if self.table_file is None:
            return
        try:
            body = self.table_file.read_bytes()
            doc = json.loads(body)
            self.offer(table_from_doc(doc))
        except (OSError, ValueError) as exc:  # DocInvalid is a ValueError
            if not isinstance(exc, FileNotFoundError):
                log.warning("%s: cannot start from this table: %s", self.table_file, exc)
            return
        self.state.version, self.state.digest = int(doc.get("version", 0)), str(doc.get("digest", ""))
        self.state.error = f"routing on the table kept in {self.table_file}; no server confirmed it yet"
        self.metrics.table_version.set(self.state.version)
        self.metrics.table_stale.set(1)

    def _keep(self, body: bytes) -> None:
        if self.table_file is None:
            return
        temporary = self.table_file.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(body)
            temporary.replace(self.table_file)

    async def run(self) -> None:
        self.resume()
        timeout = aiohttp.ClientTimeout(total=WATCH_WAIT_S + 10, sock_connect=2.0)
        failures = 0
        turn = 0
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                server = self.servers[turn % len(self.servers)]
                try:
                    waited = await self._poll(session, server)
                except (aiohttp.ClientError, TimeoutError, DocInvalid, ValueError) as exc:
                    failures += 1
                    turn += 1
                    self._stale(f"{server}: {type(exc).__name__}: {exc}".rstrip(": "))
                    await asyncio.sleep(backoff(failures))
                    continue
                failures = 0
                if not waited:  # the server has no plan yet (just started): ask again soon
                    await asyncio.sleep(0.5)

    async def _poll(self, session: aiohttp.ClientSession, server: str) -> bool:
        """One watch request; False when the server had no table to give."""
        state = self.state
        # While stale, ask without waiting: a server that is back confirms the table at once.
        wait = WATCH_WAIT_S if state.digest and not state.stale else 0
        params = {"known": state.digest, "wait": str(wait), "router": self.advertise}
        async with session.get(f"{server}/api/routing", params=params, headers=self.headers) as response:
            if response.status == 304:
                self._fresh(server)
                return True
            if response.status == 503:
                return False
            if response.status != 200:
                raise ValueError(f"answered {response.status}")
            if (response.content_length or 0) > MAX_TABLE_BYTES:
                raise ValueError(f"a routing table over {MAX_TABLE_BYTES} bytes")
            body = await response.content.read(MAX_TABLE_BYTES + 1)
        if len(body) > MAX_TABLE_BYTES:
            raise ValueError(f"a routing table over {MAX_TABLE_BYTES} bytes")
        doc = json.loads(body)
        table = table_from_doc(doc)
        self.offer(table)
        await asyncio.to_thread(self._keep, body)
        state.version, state.digest = int(doc.get("version", 0)), str(doc.get("digest", ""))
        self.metrics.table_version.set(state.version)
        self._fresh(server)
        return True

    def _fresh(self, server: str) -> None:
        if self.state.stale and self.state.received_at is not None:
            log.info("routing table from %s again (version %s)", server, self.state.version)
        self.state.stale, self.state.error, self.state.server = False, "", server
        self.state.received_at = time.monotonic()
        self.metrics.table_stale.set(0)

    def _stale(self, error: str) -> None:
        if not self.state.stale:
            log.warning("no server answers (%s); routing on the last table", error)
        self.state.stale, self.state.error = True, error
        self.metrics.table_stale.set(1)


class ServerUsage:
    """A UsageRecorder that POSTs batches to ``/api/usage/report`` (runs in a worker thread)."""

    def __init__(self, servers: Sequence[str], token: str | None, timeout_s: float = 5.0) -> None:
        self.servers = [s.rstrip("/") for s in servers]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(timeout=timeout_s)
        self.queue: deque[tuple[str, list[UsageSum]]] = deque(maxlen=KEPT_BATCHES)
        self.turn = 0

    def record(self, rows: Sequence[UsageSum]) -> None:
        if rows:
            self.queue.append((uuid.uuid4().hex, list(rows)))
        while self.queue:
            batch, kept = self.queue[0]
            if not self._send(batch, kept):
                return  # kept for the next interval
            self.queue.popleft()

    def _send(self, batch: str, rows: list[UsageSum]) -> bool:
        body = {
            "batch": batch,
            "rows": [
                {
                    "key": r.key,
                    "model": r.model,
                    "day": r.day.isoformat(),
                    "promptTokens": r.prompt_tokens,
                    "completionTokens": r.completion_tokens,
                    "requests": r.requests,
                    "errors": r.errors,
                }
                for r in rows
            ],
        }
        for _ in range(len(self.servers)):
            server = self.servers[self.turn % len(self.servers)]
            try:
                response = self.client.post(f"{server}/api/usage/report", json=body, headers=self.headers)
            except httpx.HTTPError:
                self.turn += 1
                continue
            if response.status_code == 200:
                return True
            if response.status_code == 422:
                log.error("the server refused a usage batch: %s", response.text[:200])
                return True  # it will never be accepted; keeping it would block the rest
            self.turn += 1
        return False

    def close(self) -> None:
        self.client.close()
