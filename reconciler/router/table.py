"""The routing table: which instances serve which model name.

Built purely, either from the server's watch document (``table_from_doc``: the router
process) or from desired + observed (``build_table``: the router hosted by ``serve``).
The table is immutable; the router swaps a whole new one in, so a request sees one
consistent table from start to end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.observe import ObservedState
from reconciler.spec import Desired

Strategy = Literal["least-request", "prefix-hash"]


@dataclass(frozen=True, order=True)
class Endpoint:
    """One Running instance: where to send a request for its model."""

    id: str
    url: str  # http://ip:port, no trailing slash
    health_path: str = ""  # "" : the port accepting a connection is the health check
    spec_hash: str = ""
    ready: bool = True  # its agent reported it Running with this spec (a hint: probes decide)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    endpoints: tuple[Endpoint, ...] = ()
    strategy: Strategy = "least-request"
    prefix_chars: int = 2048
    session_header: str | None = "x-session-id"  # lower case, as ASGI gives headers
    generic_proxy: bool = False


@dataclass(frozen=True)
class RouteEntry:
    """A client-facing name: weighted targets, then fallbacks in order."""

    name: str
    targets: tuple[tuple[str, int], ...]
    fallback: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingTable:
    models: Mapping[str, ModelEntry] = field(default_factory=dict)
    routes: Mapping[str, RouteEntry] = field(default_factory=dict)
    api_keys: Mapping[str, str] = field(default_factory=dict)  # sha256 hex -> key name

    def names(self) -> list[str]:
        """Every name a client may ask for that can be served now (GET /v1/models)."""
        served = [name for name, entry in self.models.items() if entry.endpoints]
        routed = [
            name
            for name, route in self.routes.items()
            if any(
                self.models.get(m, ModelEntry(m)).endpoints for m in (*(t for t, _ in route.targets), *route.fallback)
            )
        ]
        return sorted({*served, *routed})

    def knows(self, name: str) -> bool:
        return name in self.models or name in self.routes


def build_table(desired: Desired, observed: ObservedState) -> RoutingTable:
    """Running main instances of every desired model, with its routing settings; pure."""
    endpoints: dict[str, list[Endpoint]] = {}
    for worker in observed.workers:
        if worker.state != "Ready":
            continue
        for instance in worker.instances:
            if instance.state == "Running" and instance.role == "main":
                url = f"http://{worker.ip}:{instance.port}"
                endpoints.setdefault(instance.model, []).append(
                    Endpoint(instance.id, url, instance.health_path, instance.spec_hash)
                )
    models = {
        m.metadata.name: ModelEntry(
            name=m.metadata.name,
            endpoints=tuple(sorted(endpoints.get(m.metadata.name, ()))),
            strategy=m.spec.routing.strategy,
            prefix_chars=m.spec.routing.prefix_chars,
            session_header=m.spec.routing.session_header.lower() if m.spec.routing.session_header else None,
            generic_proxy=m.spec.generic_proxy,
        )
        for m in desired.models
    }
    routes = {
        r.metadata.name: RouteEntry(
            r.metadata.name, tuple((t.model, t.weight) for t in r.spec.targets), tuple(r.spec.fallback)
        )
        for r in desired.routes
    }
    keys = {k.sha256: k.name for k in desired.cluster.spec.router.api_keys}
    return RoutingTable(models, routes, keys)


class DocInvalid(ValueError):
    """A watch document the router cannot use; it keeps its previous table."""


def table_from_doc(doc: Mapping[str, Any]) -> RoutingTable:
    """The table of a ``GET /api/routing`` document (see reconciler.server.routing); pure."""
    try:
        models = {
            name: ModelEntry(
                name=name,
                endpoints=tuple(
                    sorted(
                        Endpoint(
                            str(e["id"]),
                            str(e["url"]).rstrip("/"),
                            str(e.get("healthPath") or ""),
                            str(e.get("specHash") or ""),
                            bool(e.get("ready", True)),
                        )
                        for e in entry["endpoints"]
                    )
                ),
                strategy="prefix-hash" if entry.get("strategy") == "prefix-hash" else "least-request",
                prefix_chars=int(entry.get("prefixChars", 2048)),
                session_header=entry.get("sessionHeader"),
                generic_proxy=bool(entry.get("genericProxy", False)),
            )
            for name, entry in doc["models"].items()
        }
        routes = {
            name: RouteEntry(
                name, tuple((str(m), int(w)) for m, w in route["targets"]), tuple(map(str, route.get("fallback", ())))
            )
            for name, route in doc.get("routes", {}).items()
        }
        keys = {str(k): str(v) for k, v in doc.get("apiKeys", {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DocInvalid(f"not a routing table: {type(exc).__name__}: {exc}") from exc
    return RoutingTable(models, routes, keys)
