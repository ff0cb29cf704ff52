"""Who may call the server: its own token (everything) and named read-only tokens.

A read-only token reads status and observed state and nothing else: enough for a status
page and for ``reconcile plan --server`` in CI, which then holds no secret that can change
the cluster. Tokens are stored as SHA-256 hashes; a new one is shown once, when created.

The guard answers 401 before any routing, so an unknown id or path tells nothing to a
caller without a token. The status page logs in once (a form, never a token in a URL)
and gets a signed, HttpOnly session cookie, accepted only on the read routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

Kind = Literal["admin", "read"]
SESSION_COOKIE = "reconciler_session"
SESSION_SECONDS = 12 * 3600
PUBLIC = frozenset({"/healthz", "/metrics", "/api/webhook/git", "/", "/login", "/logout"})
PUBLIC_PREFIXES = ("/static/",)
READ_ROUTES = frozenset({"/api/status", "/api/observed", "/api/page"})

api_tokens = sa.Table(  # mirrors migration 0002_ops
    "api_tokens",
    sa.MetaData(),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenBook:
    """The server token's hash plus the read-only tokens kept in the store."""

    def __init__(self, engine: sa.Engine, admin_sha256: str) -> None:
        self.engine = engine
        self.admin_sha256 = admin_sha256
        self.session_key = secrets.token_bytes(32)  # sessions end with the process: log in again

    def kind_of(self, token: str) -> Kind | None:
        digest = _digest(token)
        if hmac.compare_digest(digest, self.admin_sha256):
            return "admin"
        with self.engine.connect() as db:
            kind = db.execute(sa.select(api_tokens.c.kind).where(api_tokens.c.sha256 == digest)).scalar()
        return "read" if kind == "read" else None

    def create(self, name: str) -> str:
        """A new read-only token, returned once; ValueError when the name is taken."""
        token = "ro_" + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as db:
                row = {"name": name, "sha256": _digest(token), "kind": "read", "created_at": time.time()}
                db.execute(api_tokens.insert().values(**row))
        except IntegrityError as exc:
            raise ValueError(f"a token named {name} exists; delete it first") from exc
        return token

    def entries(self) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            rows = db.execute(api_tokens.select().order_by(api_tokens.c.name)).mappings().all()
        return [{"name": r["name"], "kind": r["kind"], "createdAt": r["created_at"]} for r in rows]

    def delete(self, name: str) -> bool:
        with self.engine.begin() as db:
            return bool(db.execute(api_tokens.delete().where(api_tokens.c.name == name)).rowcount)

    # --- page sessions -----------------------------------------------------------------

    def session_for(self, kind: Kind, now: float | None = None) -> str:
        claim = f"{kind}.{int((now or time.time()) + SESSION_SECONDS)}"
        return f"{claim}.{hmac.new(self.session_key, claim.encode(), hashlib.sha256).hexdigest()}"

    def session_kind(self, cookie: str | None, now: float | None = None) -> Kind | None:
        kind, _, rest = (cookie or "").partition(".")
        expires, _, signature = rest.partition(".")
        expected = hmac.new(self.session_key, f"{kind}.{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected) or not expires.isdigit():
            return None
        if int(expires) < (now or time.time()) or kind not in ("admin", "read"):
            return None
        return "admin" if kind == "admin" else "read"


class Guard:
    """ASGI middleware: 401 without a valid token, 403 when a read-only token asks for more."""

    def __init__(self, app: ASGIApp, book: TokenBook) -> None:
        self.app = app
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        kind = await self._kind(connection, reads=scope["method"] in ("GET", "HEAD") and path in READ_ROUTES)
        if kind is None:
            await _refuse(send, 401, "missing or wrong token", {"www-authenticate": "Bearer"})
        elif kind == "read" and not (scope["method"] in ("GET", "HEAD") and path in READ_ROUTES):
            await _refuse(send, 403, "a read-only token reads status and observed state only", {})
        else:
            scope.setdefault("state", {})["token_kind"] = kind
            await self.app(scope, receive, send)

    async def _kind(self, connection: HTTPConnection, *, reads: bool) -> Kind | None:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            if hmac.compare_digest(_digest(token), self.book.admin_sha256):
                return "admin"
            return await asyncio.to_thread(self.book.kind_of, token)
        if reads:
            return self.book.session_kind(connection.cookies.get(SESSION_COOKIE))
        return None


async def _refuse(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
