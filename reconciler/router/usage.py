"""Usage per API key name, model and day: counted on the event loop, written off it.

A recorder may block (the store, or a POST to the server), so the router sums usage in
memory and hands the sums over in a worker thread every ``FLUSH_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Protocol

FLUSH_INTERVAL_S = 1.0
ANONYMOUS = "-"  # the key name recorded when the router runs without keys
CLIENT_CLOSED = 499  # nginx's "client closed request": not an error of the model's


@dataclass(frozen=True)
class UsageSum:
    key: str
    model: str
    day: date
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    errors: int = 0


class UsageRecorder(Protocol):
    def record(self, rows: Sequence[UsageSum]) -> None:
        """Called in a worker thread every interval, with nothing to add too (a chance to retry)."""


class MemoryUsage:
    """A UsageRecorder that keeps totals in memory: tests and benches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[tuple[str, str, date], tuple[int, int]] = {}
        self.requests: dict[tuple[str, str, date], tuple[int, int]] = {}  # (requests, errors)

    def record(self, rows: Sequence[UsageSum]) -> None:
        with self._lock:
            for row in rows:
                where = (row.key, row.model, row.day)
                prompt, completion = self.totals.get(where, (0, 0))
                self.totals[where] = (prompt + row.prompt_tokens, completion + row.completion_tokens)
                requests, errors = self.requests.get(where, (0, 0))
                self.requests[where] = (requests + row.requests, errors + row.errors)


class UsageBuffer:
    """Sums on the loop (no I/O), flushed to a recorder in a thread."""

    def __init__(self, recorder: UsageRecorder | None) -> None:
        self.recorder = recorder
        self._pending: defaultdict[tuple[str, str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    def add(self, key_name: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Tokens an answer reported."""
        if self.recorder is None:
            return
        sums = self._pending[(key_name, model, datetime.now(UTC).date())]
        sums[0] += prompt_tokens
        sums[1] += completion_tokens

    def count(self, key_name: str, model: str, status: int) -> None:
        """One request answered with ``status``; 4xx/5xx are errors, a client that left is not."""
        if self.recorder is None:
            return
        sums = self._pending[(key_name, model, datetime.now(UTC).date())]
        sums[2] += 1
        sums[3] += 1 if status >= 400 and status != CLIENT_CLOSED else 0

    async def flush(self) -> None:
        if self.recorder is None:
            return
        batch, self._pending = self._pending, defaultdict(lambda: [0, 0, 0, 0])
        rows = [UsageSum(key, model, day, *sums) for (key, model, day), sums in batch.items()]
        await asyncio.to_thread(self.recorder.record, rows)

    async def run(self) -> None:
        """Flush every interval until cancelled; the last sums are flushed on the way out."""
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
