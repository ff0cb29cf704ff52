"""The server's HTTP API. Every route needs the token but /healthz, /metrics and the signed webhook."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from reconciler.server.loop import Reconciler
from reconciler.server.routing import routing_api
from reconciler.source import verify

log = logging.getLogger("reconciler.server")
AGENT_TIMEOUT = httpx.Timeout(30.0, connect=3.0)
MAX_WEBHOOK_BYTES = 25 * 1024 * 1024  # GitHub's own cap on a webhook payload


def _token_checker(token_sha256: str):  # type: ignore[no-untyped-def]
    expected = bytes.fromhex(token_sha256)

    def check(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(hashlib.sha256(token.encode()).digest(), expected):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(rec: Reconciler, token_sha256: str, webhook_secret: bytes | None) -> FastAPI:
    app = FastAPI(title="reconciler server")
    authorized = [Depends(_token_checker(token_sha256))]
    app.include_router(routing_api(rec, authorized))

    def agent_headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {rec.agent_token}"} if rec.agent_token else {}

    def agent_url(worker: str) -> str:
        record = rec.book.records.get(worker)
        if record is None:
            raise HTTPException(404, f"no worker {worker}")
        return record.url.rstrip("/")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(rec.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/api/webhook/git")
    async def webhook(request: Request) -> dict[str, str]:
        received = bytearray()
        async for chunk in request.stream():
            received += chunk
            if len(received) > MAX_WEBHOOK_BYTES:
                raise HTTPException(413, f"a push event is at most {MAX_WEBHOOK_BYTES} bytes")
        forge = verify(request.headers, bytes(received), webhook_secret or b"")
        if forge is None:
            client = request.client.host if request.client else "?"
            why = "no webhook secret is configured" if not webhook_secret else "missing or wrong signature"
            log.warning("webhook from %s refused: %s", client, why)
            raise HTTPException(401, why)
        rec.trigger()
        return {"status": "sync triggered", "forge": forge}

    @app.post("/api/sync", dependencies=authorized)
    async def sync() -> dict[str, str]:
        rec.trigger()
        return {"status": "sync triggered"}

    @app.get("/api/status", dependencies=authorized)
    async def status() -> dict[str, Any]:
        return rec.status()

    @app.get("/api/history", dependencies=authorized)
    async def history(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
        return await asyncio.to_thread(rec.store.history, limit)

    @app.get("/api/events", dependencies=authorized)
    async def events(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
        return await asyncio.to_thread(rec.store.events, limit)

    @app.get("/api/instances/{instance_id}/logs", dependencies=authorized, response_model=None)
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

    @app.get("/api/files", dependencies=authorized)
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

    @app.delete("/api/files/{identifier}", dependencies=authorized)
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

    return app
