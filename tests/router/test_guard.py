"""Hostile and careless clients: no keys and a public address, huge and deep bodies, hostile
multipart, slow headers; and the answers when no instance is healthy."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from reconciler.router import Endpoint, MemoryUsage, ModelEntry, Router, RoutingTable
from reconciler.router.listener import guarded
from tests.router.upstream import FakeUpstream, serve


def one_model(url: str) -> RoutingTable:
    return RoutingTable({"m": ModelEntry("m", (Endpoint("a", url, "/v1/models"),))})


async def call(router: Router, client: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, Any]:
    """One request straight into the ASGI app, from ``client``'s address."""
    sent: list[dict[str, Any]] = []
    body = json.dumps({"model": "m", "messages": []}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
        "client": (client, 50000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await router(scope, receive, send)
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]) or b"null")


def test_without_keys_only_loopback_clients_are_served() -> None:
    upstream = FakeUpstream("a")
    with serve(upstream) as url:

        async def scenario() -> None:
            router = Router()
            router.update_table(one_model(url))
            status, body = await call(router, "10.1.2.3")
            assert status == 403 and body["error"]["code"] == "no_api_keys"
            assert (await call(router, "127.0.0.1"))[0] == 200
            assert (await call(router, "::1"))[0] == 200
            keyed = RoutingTable(
                one_model(url).models, {}, {"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08": "ci"}
            )
            router.update_table(keyed)  # keys in git: public clients with a key are served
            assert (await call(router, "10.1.2.3", [(b"authorization", b"Bearer test")]))[0] == 200
            router.update_table(one_model(url))  # keys removed while running: back to loopback only
            assert (await call(router, "10.1.2.3", [(b"authorization", b"Bearer test")]))[0] == 403
            anonymous = Router(allow_anonymous=True)
            anonymous.update_table(one_model(url))
            assert (await call(anonymous, "10.1.2.3"))[0] == 200
            await router.aclose()
            await anonymous.aclose()

        asyncio.run(scenario())


def test_body_caps_deep_json_and_hostile_multipart() -> None:
    upstream = FakeUpstream("a")
    router = Router(max_body_bytes=64 * 1024)
    with serve(upstream) as url, serve(router) as base:
        router.update_table(one_model(url))
        endpoint = f"{base}/v1/chat/completions"
        big = httpx.post(endpoint, content=b"{" + b" " * 100_000 + b"}", headers={"content-type": "application/json"})
        assert big.status_code == 413 and "at most 65536 bytes" in big.json()["error"]["message"]

        def chunks() -> Any:
            for _ in range(20):
                yield b" " * 8192

        chunked = httpx.post(endpoint, content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        deep = httpx.post(endpoint, content=b"[" * 50_000 + b"]" * 50_000, headers={"content-type": "application/json"})
        assert deep.status_code == 413  # over the cap first
        nested = b'{"model": "m", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
        wide = Router(max_body_bytes=1024 * 1024)
        with serve(wide) as wide_base:
            wide.update_table(one_model(url))
            answer = httpx.post(
                f"{wide_base}/v1/chat/completions", content=nested, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 400
            assert answer.json()["error"] == {
                "message": "the JSON body is nested too deeply",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_json",
            }
            # The shapes that made the old regex super-linear: answered, and the loop stays free.
            hostile = b'--x\r\nContent-Disposition: form-data; name="model"\r\n' + b"a: b\r\n" * 100_000
            started = time.monotonic()
            form = httpx.post(
                f"{wide_base}/v1/audio/transcriptions",
                content=hostile,
                headers={"content-type": "multipart/form-data; boundary=x"},
                timeout=30,
            )
            assert form.status_code == 400 and form.json()["error"]["code"] == "model_required"
            assert httpx.get(f"{wide_base}/healthz").status_code == 200
            assert time.monotonic() - started < 30


def test_slow_headers_are_cut_off() -> None:
    router = Router()
    with serve(router, http=guarded(0.5)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as slow:
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.settimeout(20)
            assert slow.recv(1024) == b""  # closed by the router
        with socket.create_connection((host, int(port))) as idle:
            idle.settimeout(20)
            assert idle.recv(1024) == b""
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_no_healthy_instance_is_503_with_the_reason_and_errors_are_metered() -> None:
    sick = FakeUpstream("a", status=503)
    usage = MemoryUsage()
    router = Router(usage, probe_interval_s=0.2)
    with serve(sick) as url, serve(router) as base:
        router.update_table(one_model(url))
        deadline = time.monotonic() + 20
        while router.table.models["m"].endpoints and time.monotonic() < deadline:
            time.sleep(0.05)
        answer = httpx.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": []})
        assert answer.status_code == 503
        assert answer.json()["error"]["message"] == (
            "the model 'm' has no healthy instance: a: health check answered 503"
        )
        today = datetime.now(UTC).date()
        deadline = time.monotonic() + 10
        while usage.requests.get(("-", "m", today)) != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert usage.requests.get(("-", "m", today)) == (1, 1)
