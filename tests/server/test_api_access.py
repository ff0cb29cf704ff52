"""The server API's front door: tokens (server and read-only), the page's login, webhooks, usage.

The app is the real one over a real store (SQLite in tmp_path) and a real watched folder;
the webhook body limits are checked against a real uvicorn on loopback with a raw socket.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from reconciler.server.api import create_app
from reconciler.server.loop import Reconciler
from reconciler.server.store import Store, default_url
from reconciler.source import DirSource

TOKEN = "server-token"
SECRET = b"hook-secret"


def make_app(tmp_path: Path, secret: bytes | None = SECRET) -> tuple[FastAPI, Store]:
    store = Store(default_url(tmp_path))
    rec = Reconciler(DirSource(tmp_path / "repo"), store, None)
    return create_app(rec, hashlib.sha256(TOKEN.encode()).hexdigest(), secret), store


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app, store = make_app(tmp_path)
    with TestClient(app) as test_client:
        yield test_client
    store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_is_401_before_any_lookup(client: TestClient) -> None:
    for path in ("/api/status", "/api/instances/no-such-id/logs", "/api/nothing-here", "/docs", "/openapi.json"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/status", headers=bearer("wrong")).status_code == 401
    assert client.post("/api/sync").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_no_docs_even_with_the_token(client: TestClient) -> None:
    assert client.get("/docs", headers=bearer(TOKEN)).status_code == 404
    assert client.get("/openapi.json", headers=bearer(TOKEN)).status_code == 404
    assert client.get("/api/status", headers=bearer(TOKEN)).status_code == 200


def test_read_only_token_reads_status_and_observed_only(client: TestClient) -> None:
    created = client.post("/api/tokens/ci", headers=bearer(TOKEN))
    assert created.status_code == 200
    token = created.json()["token"]
    assert client.post("/api/tokens/ci", headers=bearer(TOKEN)).status_code == 409
    listed = client.get("/api/tokens", headers=bearer(TOKEN)).json()
    assert [t["name"] for t in listed] == ["ci"] and token not in str(listed)
    assert client.get("/api/status", headers=bearer(token)).status_code == 200
    observed = client.get("/api/observed", headers=bearer(token))
    assert observed.status_code == 200 and set(observed.json()) == {"revision", "workers", "assignments"}
    for method, path in (("GET", "/api/events"), ("POST", "/api/sync"), ("GET", "/api/usage"), ("GET", "/api/tokens")):
        assert client.request(method, path, headers=bearer(token)).status_code == 403, path
    assert client.post("/api/tokens/other", headers=bearer(token)).status_code == 403
    assert client.delete("/api/tokens/ci", headers=bearer(TOKEN)).status_code == 200
    assert client.get("/api/status", headers=bearer(token)).status_code == 401


def test_page_login_sets_an_httponly_cookie_and_shows_no_data_without_it(client: TestClient) -> None:
    form = client.get("/")
    assert form.status_code == 200 and 'name="token"' in form.text and "/static/page.js" not in form.text
    assert client.get("/api/page").status_code == 401
    wrong = client.post("/login", data={"token": "wrong"}, follow_redirects=False)
    assert wrong.status_code == 401 and 'name="token"' in wrong.text and "not valid" in wrong.text
    assert "reconciler_session" not in wrong.headers.get("set-cookie", "")
    good = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    page = client.get("/")
    assert "/static/page.js" in page.text and 'name="token"' not in page.text
    data = client.get("/api/page")
    assert data.status_code == 200 and {"status", "events", "history", "traffic"} <= set(data.json())
    # The cookie reads the page's data; it changes nothing.
    assert client.post("/api/sync").status_code == 401
    assert client.get("/api/events").status_code == 401
    assert client.get("/static/page.js").status_code == 200
    client.post("/logout", follow_redirects=False)
    client.cookies.clear()
    assert client.get("/api/page").status_code == 401


def test_usage_groups_filters_and_refuses_a_bad_date(tmp_path: Path) -> None:
    app, store = make_app(tmp_path)
    store.add_usage("ci", "chat", "2026-01-01", 10, 5)
    store.add_usage("ci", "chat", "2026-01-01", 1, 2)
    store.add_usage("-", "chat", "2026-01-02", 7, 3)
    store.add_usage("ci", "embed", "2026-01-03", 4, 0)
    with TestClient(app) as client:
        by_key = client.get("/api/usage", params={"by": "key"}, headers=bearer(TOKEN)).json()
        assert by_key == [
            {"key": "anonymous", "requests": 1, "promptTokens": 7, "completionTokens": 3, "errors": 0},
            {"key": "ci", "requests": 3, "promptTokens": 15, "completionTokens": 7, "errors": 0},
        ]
        window = client.get(
            "/api/usage",
            params={"by": ["model", "day"], "since": "2026-01-02", "until": "2026-01-03"},
            headers=bearer(TOKEN),
        ).json()
        assert [(r["model"], r["day"], r["requests"]) for r in window] == [
            ("chat", "2026-01-02", 1),
            ("embed", "2026-01-03", 1),
        ]
        bad = client.get("/api/usage", params={"since": "01/02/2026"}, headers=bearer(TOKEN))
        assert bad.status_code == 400 and "YYYY-MM-DD" in bad.json()["detail"]
    store.close()


def github_headers(body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}


def test_a_delivery_is_acted_on_once(client: TestClient) -> None:
    body = b'{"ref": "refs/heads/main"}'
    first = client.post("/api/webhook/git", content=body, headers=github_headers(body, "d-1"))
    assert first.json()["status"] == "sync triggered"
    again = client.post("/api/webhook/git", content=body, headers=github_headers(body, "d-1"))
    assert again.status_code == 200 and again.json()["status"] == "delivery already received"
    other = client.post("/api/webhook/git", content=body, headers=github_headers(body, "d-2"))
    assert other.json()["status"] == "sync triggered"
    gitlab = {"X-Gitlab-Token": SECRET.decode(), "X-Gitlab-Event-UUID": "u-1"}
    assert client.post("/api/webhook/git", content=body, headers=gitlab).json()["status"] == "sync triggered"
    assert client.post("/api/webhook/git", content=body, headers=gitlab).json()["status"] == "delivery already received"


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def answer_to_huge_post(port: int, headers: str) -> bytes:
    """POST a body announced as 100 MiB, send 64 KiB of it, and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        announced = 100 * 1024 * 1024
        sock.sendall(
            f"POST /api/webhook/git HTTP/1.1\r\nHost: x\r\nContent-Length: {announced}\r\n{headers}\r\n".encode()
        )
        sock.sendall(b"x" * 65536)
        return sock.recv(4096)


@pytest.mark.parametrize(
    ("secret", "headers", "status"),
    [
        (None, "X-Hub-Signature-256: sha256=00\r\n", b"401"),  # no secret: nothing is read
        (SECRET, "", b"401"),  # no signature header: nothing is read
        (SECRET, "X-Gitlab-Token: wrong\r\n", b"401"),  # GitLab's token is checked before the body
        (SECRET, "X-Hub-Signature-256: sha256=00\r\n", b"413"),  # signed: refused by its announced size
    ],
)
def test_webhook_answers_before_reading_an_unsigned_body(
    tmp_path: Path, secret: bytes | None, headers: str, status: bytes
) -> None:
    app, store = make_app(tmp_path, secret)
    with served(app) as port:
        answer = answer_to_huge_post(port, headers)
    store.close()
    assert answer.split(b"\r\n")[0].split(b" ")[1] == status
