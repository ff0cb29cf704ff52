"""Which instances of the table get traffic: decided by each instance's own health. Pure.

The server's table says which instances the desired state keeps; whether one gets traffic
is then up to its own probes (out after ``FAILS_TO_LEAVE`` failures in a row, back after one
success), never to its agent or the server being reachable. An instance enters once its
agent has reported it Running with this spec (the table's ``ready``): a replacement on the
same port must not be probed healthy through the old process it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.router.table import Endpoint, ModelEntry, RoutingTable

FAILS_TO_LEAVE = 2

Key = tuple[str, str, str]  # id, url, spec hash: a replaced instance is a new member


def key_of(endpoint: Endpoint) -> Key:
    return endpoint.id, endpoint.url, endpoint.spec_hash


@dataclass
class Health:
    up: bool = True
    failures: int = 0
    reason: str = ""


class Membership:
    def __init__(self) -> None:
        self.health: dict[Key, Health] = {}
        self.members: dict[Key, Endpoint] = {}

    def offer(self, table: RoutingTable) -> None:
        """Follow a new table: forget what it dropped, admit what its agent reports Running."""
        listed = {key_of(e): e for m in table.models.values() for e in m.endpoints}
        self.health = {k: h for k, h in self.health.items() if k in listed}
        for key, endpoint in listed.items():
            if key not in self.health and endpoint.ready:
                self.health[key] = Health()
        self.members = {k: listed[k] for k in self.health}

    def probed(self, endpoint: Endpoint, ok: bool, reason: str = "") -> bool:
        """Record one probe; True when the endpoint went in or out."""
        health = self.health.get(key_of(endpoint))
        if health is None:
            return False
        if ok:
            changed = not health.up
            health.up, health.failures, health.reason = True, 0, ""
            return changed
        health.failures += 1
        health.reason = reason
        if health.up and health.failures >= FAILS_TO_LEAVE:
            health.up = False
            return True
        return False

    def live(self, table: RoutingTable) -> RoutingTable:
        """The table with only the endpoints that may get traffic now."""
        models = {
            name: replace(entry, endpoints=tuple(e for e in entry.endpoints if self._up(e)))
            for name, entry in table.models.items()
        }
        return RoutingTable(models, table.routes, table.api_keys)

    def _up(self, endpoint: Endpoint) -> bool:
        health = self.health.get(key_of(endpoint))
        return health is not None and health.up

    def why_down(self, entry: ModelEntry) -> str:
        """Why none of a model's listed instances gets traffic: one clause per instance."""
        parts = []
        for endpoint in entry.endpoints:
            health = self.health.get(key_of(endpoint))
            if health is None:
                parts.append(f"{endpoint.id}: not Running yet")
            elif not health.up:
                parts.append(f"{endpoint.id}: {health.reason or 'health check failing'}")
        return "; ".join(parts)

    def targets(self) -> list[Endpoint]:
        """Every endpoint to probe."""
        return list(self.members.values())
