"""The leader lease: one server of a store follows git, plans and applies; the others follow.

A lease row in the store, renewed every ``renew`` seconds, lapses ``TTL_RENEWALS`` renewals
after the last one; each new holder gets a strictly higher epoch (``Store.acquire``). The
holder trusts its lease only until ``renew`` seconds before it would lapse by its own
monotonic clock, counted from before the renewal was sent: a server paused or cut off from
the store stops acting before anyone else may start. The agents' epoch check fences what
slips through (a pass already past that check when the server was paused).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from reconciler.server.store import Holder, Store, StoreUnavailable

TTL_RENEWALS = 5  # a lease lapses after five missed renewals: 10 s at the default 2 s
# held: the store failed, but our lease has not run out yet by our own clock.
Change = Literal["acquired", "renewed", "held", "lost", "following"]


@dataclass(frozen=True)
class Identity:
    """This server: its unique ``--id`` and the URL other servers and clients reach it at."""

    id: str
    url: str


class Lease:
    def __init__(self, store: Store, me: Identity, renew: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.me = me
        self.renew = renew
        self.ttl = renew * TTL_RENEWALS
        self.clock = clock
        self.epoch: int | None = None  # ours while we hold the lease
        self.trusted_until = 0.0
        self.error: str | None = None  # the last store failure, until a step succeeds

    def is_leader(self) -> bool:
        return self.epoch is not None and self.clock() < self.trusted_until

    def step(self) -> Change:
        """Renew the lease we hold, or try to take a lapsed one. Blocking: run it in a thread."""
        sent = self.clock()
        try:
            change = self._step()
        except StoreUnavailable as exc:
            self.error = str(exc)
            if self.epoch is not None and sent >= self.trusted_until:
                self.epoch = None
                return "lost"
            return "held" if self.epoch is not None else "following"
        self.error = None
        if self.epoch is not None:
            self.trusted_until = sent + self.ttl - self.renew
        return change

    def _step(self) -> Change:
        if self.epoch is not None:
            if self.store.renew(self.me.id, self.epoch, self.ttl):
                return "renewed"
            self.epoch = None
            return "lost"
        epoch = self.store.acquire(self.me.id, self.me.url, self.ttl)
        if epoch is None:
            return "following"
        self.epoch = epoch
        return "acquired"

    def release(self) -> None:
        """Give the lease up (a clean shutdown): a follower takes over at its next step."""
        if self.epoch is not None:
            epoch, self.epoch = self.epoch, None
            self.store.release(self.me.id, epoch)

    def holder(self) -> Holder | None:
        return self.store.holder()
