"""A version number that moves when an instance's state or process changes: the server
long-polls it (``GET /v1/changes``) to plan within a moment of a change, not a poll later."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable

MAX_WAIT_S = 60.0


class Changes:
    def __init__(self) -> None:
        # Starts from the clock, so a watcher that held the version of a previous run of the
        # agent sees a different one at once.
        self.version = time.time_ns()
        self._signature: Hashable = ()
        self._moved = asyncio.Event()

    def note(self, signature: Hashable) -> None:
        """Record what the instances look like now; a difference is a new version."""
        if signature == self._signature:
            return
        self._signature = signature
        self.version += 1
        self._moved.set()
        self._moved = asyncio.Event()

    async def after(self, version: int | None, wait_s: float) -> int:
        """The current version, once it differs from ``version`` or ``wait_s`` has passed."""
        if version != self.version:
            return self.version
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), min(wait_s, MAX_WAIT_S))
        return self.version
