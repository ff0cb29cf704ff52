"""Token usage per API key name, model and day: counted on the event loop, written off it.

The server's store implements :class:`UsageRecorder`; it may block (SQLite), so the router
sums usage in memory and hands the sums over in a worker thread every ``FLUSH_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Protocol

FLUSH_INTERVAL_S = 1.0
ANONYMOUS = "-"  # the key name recorded when the router runs without keys


class UsageRecorder(Protocol):
    def add_usage(
        self, key_name: str, model: str, day: date, prompt_tokens: int, completion_tokens: int, requests: int = 1
    ) -> None: ...


class MemoryUsage:
    """A UsageRecorder that keeps totals in memory: tests and the standalone router."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals: dict[tuple[str, str, date], tuple[int, int]] = {}
        self.requests: dict[tuple[str, str, date], int] = {}

    def add_usage(
        self, key_name: str, model: str, day: date, prompt_tokens: int, completion_tokens: int, requests: int = 1
    ) -> None:
        with self._lock:
            prompt, completion = self.totals.get((key_name, model, day), (0, 0))
            self.totals[(key_name, model, day)] = (prompt + prompt_tokens, completion + completion_tokens)
            self.requests[(key_name, model, day)] = self.requests.get((key_name, model, day), 0) + requests


class UsageBuffer:
    """Sums on the loop (no I/O), flushed to a recorder in a thread."""

    def __init__(self, recorder: UsageRecorder | None) -> None:
        self.recorder = recorder
        # prompt tokens, completion tokens, requests: a flush sums several requests in one call
        self._pending: defaultdict[tuple[str, str, date], list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(self, key_name: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        if self.recorder is None:
            return
        sums = self._pending[(key_name, model, datetime.now(UTC).date())]
        sums[0] += prompt_tokens
        sums[1] += completion_tokens
        sums[2] += 1

    async def flush(self) -> None:
        if self.recorder is None or not self._pending:
            return
        batch, self._pending = self._pending, defaultdict(lambda: [0, 0, 0])
        await asyncio.to_thread(self._write, batch)

    def _write(self, batch: dict[tuple[str, str, date], list[int]]) -> None:
        assert self.recorder is not None
        for (key, model, day), (prompt, completion, requests) in batch.items():
            self.recorder.add_usage(key, model, day, prompt, completion, requests)

    async def run(self) -> None:
        """Flush every interval until cancelled; the last sums are flushed on the way out."""
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
