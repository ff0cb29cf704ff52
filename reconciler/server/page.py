"""The read-only status page at ``/``: a login form, one HTML page, and the JSON it polls.

The page itself carries no data: without a valid session it is the login form, and the
numbers come from ``GET /api/page`` (session cookie or token) every 2 s. Logging in posts
the token in a form body (never in a URL that stays in the history) and sets an HttpOnly,
SameSite=Strict cookie. Static files ship in the package: nothing loads from the internet.
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from reconciler.server.access import SESSION_COOKIE, SESSION_SECONDS, TokenBook
from reconciler.server.traffic import TrafficWatch

if TYPE_CHECKING:
    from reconciler.server.loop import Reconciler

STATIC = Path(__file__).parent / "static"
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _login_form(message: str = "") -> str:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return (STATIC / "login.html").read_text(encoding="utf-8").replace("<!--note-->", note)


async def _form_token(request: Request) -> str:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return ""
    values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4)
    return (values.get("token") or [""])[0].strip()


def _recent(rec: Reconciler) -> dict[str, Any]:
    return {"events": rec.store.events(30), "history": rec.store.history(8)}


def mount_page(app: FastAPI, rec: Reconciler, book: TokenBook) -> None:
    traffic = TrafficWatch()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        if book.session_kind(request.cookies.get(SESSION_COOKIE)) is None:
            return HTMLResponse(_login_form(), headers=SECURITY_HEADERS)
        return HTMLResponse((STATIC / "page.html").read_text(encoding="utf-8"), headers=SECURITY_HEADERS)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        token = await _form_token(request)
        kind = await asyncio.to_thread(book.kind_of, token) if token else None
        if kind is None:
            return HTMLResponse(_login_form("That token is not valid here."), 401, headers=SECURITY_HEADERS)
        response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            SESSION_COOKIE, book.session_for(kind), max_age=SESSION_SECONDS, httponly=True, samesite="strict"
        )
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout() -> Response:
        response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    @app.get("/api/page", include_in_schema=False)
    async def data() -> dict[str, Any]:
        status = rec.status()  # on the loop, which owns the state it reads
        recent = await asyncio.to_thread(_recent, rec)
        return {"status": status, **recent, "traffic": await traffic.read(rec.router_url)}
