"""The server's HTTP API.

Every route needs a token but /healthz, /metrics, the signed webhook and the page's login
form; the guard (``access.Guard``) answers 401 before any routing or lookup. A read-only
token reads status and observed state only. There are no /docs or /openapi.json.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from reconciler.server.access import Guard, TokenBook
from reconciler.server.hooks import Refused, delivery_id, first_delivery, read_signed_body
from reconciler.server.loop import Reconciler
from reconciler.server.page import mount_page
from reconciler.server.routing import routing_api
from reconciler.server.usage import GROUPS, Group, parse_day, query_usage
from reconciler.server.workers import fence
from reconciler.source import verify

log = logging.getLogger("reconciler.server")
AGENT_TIMEOUT = httpx.Timeout(30.0, connect=3.0)


def create_app(rec: Reconciler, token_sha256: str, webhook_secret: bytes | None) -> FastAPI:
    app = FastAPI(title="reconciler server", docs_url=None, redoc_url=None, openapi_url=None)
    book = TokenBook(rec.store.engine, token_sha256)
    app.add_middleware(Guard, book=book)
    mount_page(app, rec, book)
    app.include_router(routing_api(rec))  # the Guard asks for the server token

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(rec.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/api/webhook/git")
    async def webhook(request: Request) -> dict[str, str]:
        try:
            body = await read_signed_body(request, webhook_secret)
            forge = verify(request.headers, body, webhook_secret or b"")
            if forge is None:
                raise Refused(401, "missing or wrong signature")
            delivery = delivery_id(request.headers)
        except Refused as refused:
            client = request.client.host if request.client else "?"
            log.warning("webhook from %s refused: %s", client, refused.reason)
            raise HTTPException(refused.status, refused.reason) from refused
        if delivery is not None and not await asyncio.to_thread(first_delivery, rec.store.engine, delivery):
            return {"status": "delivery already received", "forge": forge}
        rec.trigger()
        return {"status": "sync triggered", "forge": forge}

    @app.post("/api/sync")
    async def sync() -> dict[str, str]:
        rec.trigger()
        return {"status": "sync triggered"}

    @app.get("/api/status")
    async def status() -> dict[str, Any]:
        return rec.status()

    @app.get("/api/history")
    async def history(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return await asyncio.to_thread(rec.store.history, limit)

    @app.get("/api/events")
    async def events(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
        return await asyncio.to_thread(rec.store.events, limit)

    _mount_reads(app, rec)
    _mount_tokens(app, book)
    _mount_agent_relays(app, rec)
    return app


def _mount_reads(app: FastAPI, rec: Reconciler) -> None:
    @app.get("/api/observed")
    async def observed() -> dict[str, Any]:
        """What the planner sees now: the workers (a snapshot) and the instance assignments."""
        view = fence(rec.book.view(rec.clock()), rec.assigned)
        return {
            "revision": rec.applied["revision"] if rec.applied else None,
            "workers": [w.model_dump(mode="json", by_alias=True) for w in view.workers],
            "assignments": dict(rec.assigned),
        }

    @app.get("/api/usage")
    async def usage(
        by: Annotated[list[Group] | None, Query()] = None, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        try:
            first = parse_day(since, "since") if since else None
            last = parse_day(until, "until") if until else None
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        groups = tuple(g for g in GROUPS if g in (by or GROUPS))
        return await asyncio.to_thread(query_usage, rec.store.engine, groups, first, last)


def _mount_tokens(app: FastAPI, book: TokenBook) -> None:
    @app.get("/api/tokens")
    async def tokens() -> list[dict[str, Any]]:
        return await asyncio.to_thread(book.entries)

    @app.post("/api/tokens/{name}")
    async def create_token(name: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]) -> dict[str, str]:
        try:
            token = await asyncio.to_thread(book.create, name)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"name": name, "kind": "read", "token": token}

    @app.delete("/api/tokens/{name}")
    async def delete_token(name: str) -> dict[str, str]:
        if not await asyncio.to_thread(book.delete, name):
            raise HTTPException(404, f"no token named {name}")
        return {"deleted": name}


def _mount_agent_relays(app: FastAPI, rec: Reconciler) -> None:
    """Routes answered by asking the agents: logs and model files."""

    def agent_headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {rec.agent_token}"} if rec.agent_token else {}

    def agent_url(worker: str) -> str:
        record = rec.book.records.get(worker)
        if record is None:
            raise HTTPException(404, f"no worker {worker}")
        return record.url.rstrip("/")

    @app.get("/api/instances/{instance_id}/logs", response_model=None)
    async def logs(
        instance_id: str, tail: Annotated[int, Query(ge=0, le=100_000)] = 100, follow: bool = False
    ) -> StreamingResponse:
        worker = rec.assigned.get(instance_id) or next(
            (w.name for w in rec.observed.workers for i in w.instances if i.id == instance_id), None
        )
        if worker is None:
            raise HTTPException(404, f"no instance {instance_id}")
        url = f"{agent_url(worker)}/v1/instances/{instance_id}/logs"
        client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=3.0))
        try:
            upstream = await client.send(
                client.build_request("GET", url, params={"tail": tail, "follow": int(follow)}, headers=agent_headers()),
                stream=True,
            )
        except httpx.HTTPError as exc:
            await client.aclose()
            raise HTTPException(502, f"worker {worker} did not answer: {type(exc).__name__}") from exc
        if upstream.status_code != 200:
            detail = (await upstream.aread()).decode(errors="replace")
            await upstream.aclose()
            await client.aclose()
            raise HTTPException(upstream.status_code, detail)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(relay(), media_type="text/plain")

    @app.get("/api/files")
    async def files() -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = []
        async with httpx.AsyncClient(timeout=AGENT_TIMEOUT) as client:
            for worker in sorted(rec.book.ready()):
                try:
                    response = await client.get(f"{agent_url(worker)}/v1/files", headers=agent_headers())
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    raise HTTPException(502, f"worker {worker}: {type(exc).__name__}") from exc
                listing += [{"worker": worker, **entry} for entry in response.json()]
        return listing

    @app.delete("/api/files/{identifier}")
    async def delete_file(identifier: str) -> dict[str, Any]:
        deleted = []
        async with httpx.AsyncClient(timeout=AGENT_TIMEOUT) as client:
            for worker in sorted(rec.book.ready()):
                try:
                    response = await client.delete(
                        f"{agent_url(worker)}/v1/files/{identifier}", headers=agent_headers()
                    )
                except httpx.HTTPError as exc:
                    raise HTTPException(502, f"worker {worker}: {type(exc).__name__}") from exc
                if response.status_code == 200:
                    deleted.append({"worker": worker, **response.json()})
                elif response.status_code != 404:
                    raise HTTPException(response.status_code, f"worker {worker}: {response.json().get('detail')}")
        if not deleted:
            raise HTTPException(404, f"no file {identifier} on any Ready worker")
        return {"deleted": deleted}
