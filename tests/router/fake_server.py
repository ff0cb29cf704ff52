"""A stand-in for the reconciler server's router-facing API: the routing-table watch and the
usage report, with the same wire format (reconciler.server.routing), on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

TOKEN = "server-token"


class FakeServer:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.reports: list[dict[str, Any]] = []
        self.watchers: list[str] = []
        self.version = 0
        self.body = b""
        self.digest = ""
        self.publish(doc)

    def publish(self, doc: dict[str, Any]) -> None:
        self.version += 1
        self.digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
        self.body = json.dumps({"version": self.version, "digest": self.digest, **doc}).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = dict(scope["headers"])
        if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            await _send(send, 401, b"{}")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/api/usage/report":
            self.reports.append(json.loads(body))
            await _send(send, 200, b'{"rows": 1}')
            return
        query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
        self.watchers.append(query.get("router", ""))
        waited = 0.0
        # Held at most 2 s (the real server holds 25 s), so a test can stop this server quickly.
        while query.get("known") == self.digest and waited < min(float(query.get("wait", 0)), 2.0):
            await asyncio.sleep(0.05)
            waited += 0.05
        if query.get("known") == self.digest:
            await _send(send, 304, b"")
        else:
            await _send(send, 200, self.body)


async def _send(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def doc_of(endpoints: dict[str, str], keys: dict[str, str] | None = None, health: str = "/v1/models") -> dict[str, Any]:
    """A table with one model ``m`` served by ``endpoints`` (id -> URL)."""
    return {
        "models": {
            "m": {
                "strategy": "least-request",
                "prefixChars": 2048,
                "sessionHeader": "x-session-id",
                "genericProxy": False,
                "endpoints": [
                    {"id": i, "url": u, "healthPath": health, "specHash": "h", "ready": True}
                    for i, u in sorted(endpoints.items())
                ],
            }
        },
        "routes": {},
        "apiKeys": keys or {},
    }
