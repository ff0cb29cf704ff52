"""The agent's door: the token is checked on the request line and headers, before any body
is read, and a declared body past the cap is refused unread.

Pure ASGI, outside routing, so nothing (docs, unknown paths, body parsing) runs for a
caller without the token. Refusals close the connection: a client still sending a large
body is not read to its end.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_BODY = 8 * 1024 * 1024  # a full set of thousands of instances fits; JSON is parsed whole
OPEN_PATHS = frozenset({"/healthz"})


class Gate:
    def __init__(self, app: ASGIApp, token_sha256: str) -> None:
        self.app = app
        self.expected = bytes.fromhex(token_sha256)

    def authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        given = hashlib.sha256(token).digest()
        # Both sides always compared, in constant time, whatever the scheme.
        return hmac.compare_digest(given, self.expected) and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # none are served; refused before the app sees one
            await send({"type": "websocket.close", "code": 1008})
            return
        if not self.authorized(scope):
            await refuse(send, 401, "missing or wrong token", [(b"www-authenticate", b"Bearer")])
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            await refuse(send, 413, f"a request body is at most {MAX_BODY} bytes")
            return
        await self.app(scope, receive, send)


async def refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
