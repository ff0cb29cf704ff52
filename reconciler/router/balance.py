"""Choosing an instance: pure algorithms, plus the small mutable state the router keeps per process.

- least outstanding requests: the fewest in flight; ties broken in turn, so one client
  sending one request at a time still reaches every instance;
- prefix-hash: consistent hashing with bounded loads (CHWBL, as in KubeAI): walk the ring from
  the key's point and take the first instance whose load stays under ``LOAD_FACTOR`` times the
  mean, so one prompt prefix keeps hitting the instance that holds it in its KV cache;
- session affinity: the same ring without the bound, so a session stays put while it can;
- weighted targets of a ModelRoute: smooth weighted round robin (nginx), deterministic, so a
  90/10 split holds over every window, not just on average.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.router.table import Endpoint, ModelEntry, RouteEntry, RoutingTable

LOAD_FACTOR = 1.25
VIRTUAL_NODES = 64  # points per instance on the ring: evens out the arcs


def _point(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Ring:
    """A consistent-hash ring over some endpoints."""

    points: tuple[int, ...]
    owners: tuple[Endpoint, ...]

    @classmethod
    def of(cls, endpoints: Sequence[Endpoint]) -> Ring:
        pairs = sorted((_point(f"{e.id}#{v}"), e) for e in endpoints for v in range(VIRTUAL_NODES))
        return cls(tuple(p for p, _ in pairs), tuple(e for _, e in pairs))

    def walk(self, key: str) -> list[Endpoint]:
        """Distinct endpoints in ring order starting at the key's point."""
        if not self.points:
            return []
        start = bisect.bisect_left(self.points, _point(key)) % len(self.points)
        seen: dict[Endpoint, None] = {}
        count = len(set(self.owners))
        for offset in range(len(self.points)):
            seen.setdefault(self.owners[(start + offset) % len(self.points)], None)
            if len(seen) == count:
                break
        return list(seen)


def least_request(candidates: Sequence[Endpoint], inflight: Mapping[str, int], turn: int) -> Endpoint:
    """The endpoint with the fewest requests in flight; among equals, the ``turn``-th."""
    low = min(inflight.get(e.id, 0) for e in candidates)
    ties = [e for e in candidates if inflight.get(e.id, 0) == low]
    return ties[turn % len(ties)]


def bounded_hash(ring: Ring, key: str, candidates: Sequence[Endpoint], inflight: Mapping[str, int]) -> Endpoint:
    """CHWBL: the first endpoint from the key's point whose load would stay within the bound."""
    allowed = set(candidates)
    total = sum(inflight.get(e.id, 0) for e in candidates) + 1  # counting this request
    bound = math.ceil(LOAD_FACTOR * total / len(candidates))
    order = [e for e in ring.walk(key) if e in allowed]
    for endpoint in order:
        if inflight.get(endpoint.id, 0) + 1 <= bound:
            return endpoint
    return order[0]  # unreachable with LOAD_FACTOR > 1: some endpoint is at or below the mean


def affinity(ring: Ring, key: str, candidates: Sequence[Endpoint]) -> Endpoint:
    allowed = set(candidates)
    return next(e for e in ring.walk(key) if e in allowed)


@dataclass
class SmoothWeighted:
    """nginx's smooth weighted round robin over a fixed list of weights; skips unavailable ones."""

    weights: tuple[int, ...]
    current: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = [0] * len(self.weights)

    def pick(self, available: Sequence[int]) -> int | None:
        live = [i for i in available if self.weights[i] > 0]
        if not live:
            return None
        total = 0
        for i in live:
            self.current[i] += self.weights[i]
            total += self.weights[i]
        best = max(live, key=lambda i: (self.current[i], -i))
        self.current[best] -= total
        return best


def prefix_key(body: Mapping[str, object], chars: int) -> str:
    """The start of the prompt: the first messages of a chat, or the prompt text."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            text = content if isinstance(content, str) else repr(content)
            parts.append(text)
            size += len(text)
            if size >= chars:
                break
        return "\x1e".join(parts)[:chars]
    for name in ("prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            return value[:chars]
        if isinstance(value, list) and value and isinstance(value[0], str):
            return value[0][:chars]
    return ""


@dataclass
class Balancer:
    """Per-process routing state: requests in flight, cooled-down instances, rings, route turns."""

    cooldown_s: float = 10.0
    inflight: dict[str, int] = field(default_factory=dict)
    cooling: dict[str, float] = field(default_factory=dict)  # endpoint id -> monotonic time it may return
    turns: dict[str, int] = field(default_factory=dict)
    rings: dict[tuple[Endpoint, ...], Ring] = field(default_factory=dict)
    weighted: dict[RouteEntry, SmoothWeighted] = field(default_factory=dict)

    def forget_stale(self, table: RoutingTable) -> None:
        """Drop state of instances and routes the new table no longer has."""
        live = {e.id for m in table.models.values() for e in m.endpoints}
        self.cooling = {k: v for k, v in self.cooling.items() if k in live}
        self.inflight = {k: v for k, v in self.inflight.items() if k in live or v > 0}
        current = {m.endpoints for m in table.models.values()}
        self.rings = {k: v for k, v in self.rings.items() if k in current}
        routes = set(table.routes.values())
        self.weighted = {k: v for k, v in self.weighted.items() if k in routes}

    def models_for(self, table: RoutingTable, name: str) -> list[ModelEntry]:
        """The models that may serve ``name``, in the order to try them."""
        route = table.routes.get(name)
        if route is None:
            entry = table.models.get(name)
            return [entry] if entry is not None else []
        served = [i for i, (model, _) in enumerate(route.targets) if _entry(table, model).endpoints]
        wrr = self.weighted.get(route)
        if wrr is None:
            wrr = self.weighted[route] = SmoothWeighted(tuple(w for _, w in route.targets))
        first = wrr.pick(served)
        order = ([] if first is None else [first]) + sorted(
            (i for i in served if i != first and route.targets[i][1] > 0), key=lambda i: -route.targets[i][1]
        )
        names = [route.targets[i][0] for i in order] + [m for m in route.fallback]
        return [_entry(table, n) for n in dict.fromkeys(names)]

    def pick(
        self, entry: ModelEntry, body: Mapping[str, object], session: str | None, exclude: set[str], now: float
    ) -> Endpoint | None:
        candidates = [e for e in entry.endpoints if e.id not in exclude]
        if not candidates:
            return None
        warm = [e for e in candidates if self.cooling.get(e.id, 0.0) <= now]
        candidates = warm or candidates  # all cooling down: better a retry than a refusal
        if session is not None:
            return affinity(self._ring(entry), session, candidates)
        if entry.strategy == "prefix-hash":
            return bounded_hash(self._ring(entry), prefix_key(body, entry.prefix_chars), candidates, self.inflight)
        turn = self.turns.get(entry.name, 0)
        self.turns[entry.name] = turn + 1
        return least_request(candidates, self.inflight, turn)

    def _ring(self, entry: ModelEntry) -> Ring:
        ring = self.rings.get(entry.endpoints)
        if ring is None:
            ring = self.rings[entry.endpoints] = Ring.of(entry.endpoints)
        return ring

    def started(self, endpoint: Endpoint) -> None:
        self.inflight[endpoint.id] = self.inflight.get(endpoint.id, 0) + 1

    def finished(self, endpoint: Endpoint) -> None:
        self.inflight[endpoint.id] = self.inflight.get(endpoint.id, 1) - 1

    def failed(self, endpoint: Endpoint, now: float) -> None:
        self.cooling[endpoint.id] = now + self.cooldown_s


def _entry(table: RoutingTable, name: str) -> ModelEntry:
    return table.models.get(name) or ModelEntry(name)
