"""What routers need from the server: the routing table as a long-polled watch, and a place to
report usage. Routers are separate processes (``reconcile router --server URL``) and keep
routing on their last table while this server is away.

The table lists only the main instances the desired state keeps, where the plan keeps them
(``Plan.desired_sets()``), so a returning worker's stale copies never get traffic. Each endpoint
says whether its agent last reported it Running with this spec; routers then follow each
instance's own health. Wire format (``GET /api/routing``)::

    {"version": 7, "digest": "...", "models": {NAME: {"strategy", "prefixChars", "sessionHeader",
      "genericProxy", "endpoints": [{"id", "url", "healthPath", "specHash", "ready"}]}},
     "routes": {NAME: {"targets": [[MODEL, WEIGHT]], "fallback": [MODEL]}}, "apiKeys": {SHA256: NAME}}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any, Protocol
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.observe import InstanceSpec
from reconciler.plan import Plan
from reconciler.server.store import Store
from reconciler.server.workers import WorkerRecord
from reconciler.spec import Desired

if TYPE_CHECKING:
    from reconciler.server.loop import Reconciler

WATCH_STEP_S = 0.1  # how often a waiting watch looks for a new plan: a change reaches routers this fast
# A watch is held at most this long: a stopping server waits for the watches it holds.
MAX_WAIT_S = 10.0
MAX_REPORT_BYTES = 1024 * 1024
REMEMBERED_BATCHES = 4096  # batch ids kept to drop a report a router sends twice


def _address(name: str, records: Mapping[str, WorkerRecord], desired: Desired) -> str | None:
    record = records.get(name)
    if record is not None and record.last is not None and record.last.ip:
        return record.last.ip
    agent = next((a for a in desired.cluster.spec.agents if a.name == name), None)
    url = record.url if record is not None else (agent.url if agent is not None else "")
    return urlsplit(url).hostname


def routing_doc(desired: Desired, plan: Plan, records: Mapping[str, WorkerRecord]) -> dict[str, Any]:
    """The routing table of this plan, as sent to routers (without version and digest); pure."""
    running = {
        (name, i.id, i.spec_hash)
        for name, record in records.items()
        if record.last is not None
        for i in record.last.instances
        if i.state == "Running"
    }
    endpoints: dict[str, list[dict[str, Any]]] = {}
    sets: dict[str, list[InstanceSpec]] = plan.desired_sets()
    for worker in sorted(sets):
        host = _address(worker, records, desired)
        if host is None:
            continue
        for spec in sets[worker]:
            if spec.role != "main":
                continue
            endpoints.setdefault(spec.model, []).append(
                {
                    "id": spec.id,
                    "url": f"http://{host}:{spec.port}" if ":" not in host else f"http://[{host}]:{spec.port}",
                    "healthPath": spec.health_path,
                    "specHash": spec.spec_hash,
                    "ready": (worker, spec.id, spec.spec_hash) in running,
                }
            )
    models = {
        m.metadata.name: {
            "strategy": m.spec.routing.strategy,
            "prefixChars": m.spec.routing.prefix_chars,
            "sessionHeader": m.spec.routing.session_header.lower() if m.spec.routing.session_header else None,
            "genericProxy": m.spec.generic_proxy,
            "endpoints": sorted(endpoints.get(m.metadata.name, []), key=lambda e: (e["id"], e["url"])),
        }
        for m in desired.models
    }
    routes = {
        r.metadata.name: {"targets": [[t.model, t.weight] for t in r.spec.targets], "fallback": list(r.spec.fallback)}
        for r in desired.routes
    }
    keys = {k.sha256: k.name for k in desired.cluster.spec.router.api_keys}
    return {"models": models, "routes": routes, "apiKeys": keys}


class RoutingFeed:
    """The current table with a version that grows on every change; rebuilt only when the
    loop has produced a new plan or observation (checked by identity, so it costs nothing)."""

    def __init__(self) -> None:
        self.version = 0
        self.digest = ""
        self.body = b""
        self._seen: tuple[int, ...] = ()
        self.routers: dict[str, float] = {}  # advertised URL -> last watch, monotonic

    def refresh(self, rec: Reconciler) -> None:
        if rec.plan is None or rec.desired is None:
            return
        seen = (id(rec.plan), id(rec.desired), id(rec.observed))
        if seen == self._seen:
            return
        self._seen = seen
        doc = routing_doc(rec.desired, rec.plan, rec.book.records)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
        if digest != self.digest:
            self.version += 1
            self.digest = digest
            self.body = json.dumps({"version": self.version, "digest": digest, **doc}).encode()

    async def changed(self, rec: Reconciler, known: str, wait_s: float, request: Request) -> bool:
        """Wait until the table differs from ``known`` (a digest); False on timeout or when the
        router hangs up."""
        deadline = time.monotonic() + wait_s
        while True:
            self.refresh(rec)
            if self.digest and self.digest != known:
                return True
            if time.monotonic() >= deadline or await request.is_disconnected():
                return False
            await asyncio.sleep(WATCH_STEP_S)

    def register(self, rec: Reconciler, url: str) -> None:
        """Remember a router that watches; the first one is the ``routerUrl`` status shows."""
        self.routers[url] = time.monotonic()
        if rec.router_url is None:
            rec.router_url = url


class UsageRow(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    key: Annotated[str, Field(min_length=1, max_length=128)]
    model: Annotated[str, Field(min_length=1, max_length=128)]
    day: date
    prompt_tokens: Annotated[int, Field(ge=0, le=2**62)] = 0
    completion_tokens: Annotated[int, Field(ge=0, le=2**62)] = 0
    requests: Annotated[int, Field(ge=0, le=2**62)] = 0
    errors: Annotated[int, Field(ge=0, le=2**62)] = 0


class UsageReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch: Annotated[str, Field(min_length=1, max_length=64)]
    rows: Annotated[list[UsageRow], Field(max_length=10_000)]


def routing_api(rec: Reconciler) -> APIRouter:
    """``GET /api/routing`` (the watch) and ``POST /api/usage/report``; the app's guard asks for the token."""
    api = APIRouter()
    feed = RoutingFeed()
    batches: OrderedDict[str, None] = OrderedDict()

    @api.get("/api/routing")
    async def routing(
        request: Request,
        known: Annotated[str, Query(max_length=64)] = "",
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0,
        router: Annotated[str, Query(max_length=256)] = "",
    ) -> Response:
        """The table once it differs from the digest ``known``; 304 after ``wait`` seconds if not."""
        if router.startswith(("http://", "https://")):
            feed.register(rec, router)
        if not await feed.changed(rec, known, wait, request):
            return Response(status_code=304 if feed.digest else 503)
        return Response(feed.body, media_type="application/json")

    @api.post("/api/usage/report")
    async def report(request: Request) -> dict[str, int]:
        if int(request.headers.get("content-length") or 0) > MAX_REPORT_BYTES:
            raise HTTPException(413, f"a usage report is at most {MAX_REPORT_BYTES} bytes")
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > MAX_REPORT_BYTES:
                raise HTTPException(413, f"a usage report is at most {MAX_REPORT_BYTES} bytes")
        try:
            body = UsageReport.model_validate_json(bytes(received))
        except ValueError as exc:
            raise HTTPException(422, f"not a usage report: {str(exc).splitlines()[0]}") from exc
        if body.batch in batches:
            return {"rows": 0}
        await asyncio.to_thread(write_usage, rec.store, body.rows)
        batches[body.batch] = None
        while len(batches) > REMEMBERED_BATCHES:
            batches.popitem(last=False)
        return {"rows": len(body.rows)}

    return api


class UsageCounts(Protocol):
    """One row of usage sums, as a router reports it (UsageRow here, UsageSum in the router)."""

    @property
    def key(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def day(self) -> date: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...


def write_usage(store: Store, rows: Sequence[UsageCounts]) -> None:
    """Add usage sums to the store's usage table (blocking: call it off the event loop)."""
    for row in rows:
        store.add_usage(
            row.key,
            row.model,
            row.day.isoformat(),
            row.prompt_tokens,
            row.completion_tokens,
            requests=row.requests,
            errors=row.errors,
        )
