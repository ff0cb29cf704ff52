"""The router over real HTTP: uvicorn serving it, fake OpenAI-shaped upstreams on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from reconciler.router import Endpoint, MemoryUsage, ModelEntry, RouteEntry, Router, RoutingTable
from tests.router.upstream import FakeUpstream, free_socket, serve

KEY = "sk-test-123"


@pytest.fixture
def upstreams() -> Iterator[dict[str, tuple[FakeUpstream, str]]]:
    apps = {name: FakeUpstream(name) for name in ("a", "b", "c")}
    with serve(apps["a"]) as a, serve(apps["b"]) as b, serve(apps["c"]) as c:
        yield {"a": (apps["a"], a), "b": (apps["b"], b), "c": (apps["c"], c)}


def table(upstreams, keys: dict[str, str] | None = None, **models: ModelEntry) -> RoutingTable:
    base = {
        "m": ModelEntry("m", (Endpoint("a", upstreams["a"][1]), Endpoint("b", upstreams["b"][1]))),
        "solo": ModelEntry("solo", (Endpoint("c", upstreams["c"][1]),), generic_proxy=True),
        "idle": ModelEntry("idle"),
    }
    return RoutingTable({**base, **models}, {}, keys or {})


@pytest.fixture
def router_url() -> Iterator[tuple[Router, MemoryUsage, str]]:
    usage = MemoryUsage()
    router = Router(usage, timeout_s=1.0, cooldown_s=30.0, max_inflight_per_instance=1)
    with serve(router) as url:
        yield router, usage, url


def chat(url: str, model: str = "m", key: str | None = None, **extra) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=10)


def wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_chat_forwarded_and_metered(upstreams, router_url):
    router, usage, url = router_url
    router.update_table(table(upstreams))
    response = chat(url)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hi"
    today = datetime.now(UTC).date()
    assert wait_for(lambda: usage.totals.get(("-", "m", today)) == (5, 1))


def test_two_instances_share_sequential_traffic(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    seen = Counter(chat(url).headers["x-instance"] for _ in range(10))
    assert seen == {"a": 5, "b": 5}


def test_stream_gets_usage_injected_and_stripped(upstreams, router_url):
    router, usage, url = router_url
    router.update_table(table(upstreams))
    response = chat(url, stream=True, chunks=4)
    events = [line for line in response.text.splitlines() if line.startswith("data:")]
    assert events[-1] == "data: [DONE]" and len(events) == 5
    assert all('"usage"' not in e for e in events)
    upstream = upstreams[response.headers["x-instance"]][0]
    assert upstream.received[-1]["stream_options"] == {"include_usage": True}
    assert wait_for(lambda: usage.totals.get(("-", "m", datetime.now(UTC).date())) == (5, 4))


def test_stream_keeps_usage_the_client_asked_for(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    response = chat(url, stream=True, stream_options={"include_usage": True})
    assert sum('"usage"' in line for line in response.text.splitlines()) == 1


def test_stream_chunks_arrive_before_the_end(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    body = {"model": "m", "messages": [], "stream": True, "chunks": 2, "chunk_delay": 30}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
        first = next(response.iter_lines())
    assert first.startswith("data: ") and "t0" in first  # the upstream is still sleeping 30 s


def test_client_disconnect_cancels_upstream(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    body = {"model": "m", "messages": [], "stream": True, "chunks": 2, "chunk_delay": 30}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
        lines = response.iter_lines()
        next(lines)
        upstream = upstreams[response.headers["x-instance"]][0]
        assert upstream.cancelled == 0
    assert wait_for(lambda: upstream.cancelled == 1)
    assert 'reconciler_router_requests_total{code="499",model="m"} 1.0' in httpx.get(f"{url}/metrics").text


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [("nope", 404, "model_not_found"), ("idle", 503, "model_not_ready")],
)
def test_errors_in_openai_shape(upstreams, router_url, model, status, code):
    router, _, url = router_url
    router.update_table(table(upstreams))
    response = chat(url, model)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code and response.json()["error"]["message"]


def test_api_keys_checked_and_never_forwarded(upstreams, router_url):
    router, usage, url = router_url
    router.update_table(table(upstreams, {hashlib.sha256(KEY.encode()).hexdigest(): "ci"}))
    assert chat(url).status_code == 401
    assert chat(url, key="wrong").json()["error"]["code"] == "invalid_api_key"
    response = chat(url, key=KEY)
    assert response.status_code == 200
    assert "authorization" not in upstreams[response.headers["x-instance"]][0].headers[-1]
    assert wait_for(lambda: ("ci", "m", datetime.now(UTC).date()) in usage.totals)


def test_failed_instance_retried_elsewhere_and_cooled_down(upstreams, router_url):
    router, _, url = router_url
    upstreams["a"][0].status = 503
    router.update_table(table(upstreams))
    assert [chat(url).headers["x-instance"] for _ in range(4)] == ["b"] * 4
    assert len(upstreams["a"][0].received) == 1  # skipped after its first failure


def test_connect_error_retried_on_another_instance(upstreams, router_url):
    router, _, url = router_url
    closed = free_socket()
    dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    router.update_table(table(upstreams, m=ModelEntry("m", (Endpoint("dead", dead), Endpoint("b", upstreams["b"][1])))))
    assert all(chat(url).status_code == 200 for _ in range(4))


def test_timeout_is_504(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    response = chat(url, delay=3)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"


def test_full_queue_is_429(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    with httpx.Client(timeout=10) as client:
        body = {"model": "solo", "messages": [], "stream": True, "chunks": 2, "chunk_delay": 30}
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()  # held: a dropped generator closes the connection
            next(lines)
            refused = chat(url, "solo")
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"


def test_canary_route_splits_90_10(upstreams, router_url):
    router, _, url = router_url
    routed = table(
        upstreams,
        big=ModelEntry("big", (Endpoint("a", upstreams["a"][1]),)),
        small=ModelEntry("small", (Endpoint("b", upstreams["b"][1]),)),
    )
    router.update_table(
        RoutingTable(routed.models, {"chat": RouteEntry("chat", (("big", 90), ("small", 10)), ("solo",))})
    )
    with httpx.Client(timeout=10) as client:
        body = {"model": "chat", "messages": []}
        seen = Counter(client.post(f"{url}/v1/chat/completions", json=body).headers["x-instance"] for _ in range(200))
    assert seen == {"a": 180, "b": 20}
    assert upstreams["a"][0].received[-1]["model"] == "big"  # each instance hears its own model's name


def test_route_falls_back_when_targets_have_no_instance(upstreams, router_url):
    router, _, url = router_url
    routed = table(upstreams)
    router.update_table(RoutingTable(routed.models, {"chat": RouteEntry("chat", (("idle", 1),), ("solo",))}))
    assert chat(url, "chat").headers["x-instance"] == "c"


def test_prefix_hash_keeps_a_prefix_on_one_instance(upstreams, router_url):
    router, _, url = router_url
    endpoints = tuple(Endpoint(n, upstreams[n][1]) for n in "abc")
    router.update_table(table(upstreams, m=ModelEntry("m", endpoints, strategy="prefix-hash", prefix_chars=64)))
    system = {"role": "system", "content": "You are a pirate. " * 10}

    def send(system_text: str, question: str) -> str:
        body = {
            "model": "m",
            "messages": [{"role": "system", "content": system_text}, {"role": "user", "content": question}],
        }
        return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).headers["x-instance"]

    assert len({send(system["content"], f"question {i}") for i in range(12)}) == 1
    assert len({send(f"prompt number {i}", "q") for i in range(30)}) >= 2


def test_session_header_sticks(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    body = {"model": "m", "messages": []}
    seen = {
        httpx.post(f"{url}/v1/chat/completions", json=body, headers={"X-Session-Id": "s1"}).headers["x-instance"]
        for _ in range(6)
    }
    assert len(seen) == 1


def test_models_list_and_embeddings_and_multipart(upstreams, router_url):
    router, usage, url = router_url
    router.update_table(RoutingTable(table(upstreams).models, {"alias": RouteEntry("alias", (("solo", 1),))}))
    listed = httpx.get(f"{url}/v1/models").json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["alias", "m", "solo"]
    embedded = httpx.post(f"{url}/v1/embeddings", json={"model": "solo", "input": "x"})
    assert embedded.status_code == 200
    assert wait_for(lambda: usage.totals.get(("-", "solo", datetime.now(UTC).date())) == (3, 0))
    files = {"file": ("a.wav", b"RIFF....", "audio/wav")}
    transcribed = httpx.post(f"{url}/v1/audio/transcriptions", data={"model": "solo"}, files=files)
    assert transcribed.status_code == 200 and transcribed.headers["x-instance"] == "c"


def test_generic_proxy_only_for_flagged_models(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    proxied = httpx.get(f"{url}/model/proxy/v1/models", headers={"X-Model": "solo"})
    assert proxied.status_code == 200 and proxied.json()["data"] == [{"id": "c"}]
    refused = httpx.get(f"{url}/model/proxy/v1/models", headers={"X-Model": "m"})
    assert refused.status_code == 404


def test_metrics_exposed(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    chat(url)
    text = httpx.get(f"{url}/metrics").text
    assert 'reconciler_router_requests_total{code="200",model="m"} 1.0' in text
    assert "reconciler_router_routing_decisions_total" in text
    assert "reconciler_router_time_to_first_token_seconds_bucket" in text
    assert json.loads(httpx.get(f"{url}/healthz").text) == {"status": "ok"}


def test_instance_silent_mid_stream_ends_the_stream_with_an_error_event(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    body = {"model": "m", "messages": [], "stream": True, "chunks": 3, "chunk_delay": 3}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)  # too late for an error status
    events = [line for line in answer.text.splitlines() if line.startswith("data:")]
    assert answer.status_code == 200 and len(events) == 2 and "t0" in events[0]
    assert json.loads(events[1].removeprefix("data:"))["error"]["code"] == "upstream_error"
    assert chat(url).status_code == 200


def test_an_instance_killed_mid_stream_is_an_api_error_for_the_openai_sdk(router_url):
    import openai

    first = b'data: {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": '
    first += b'[{"index": 0, "delta": {"content": "t0"}, "finish_reason": null}]}\r\n\r\n'

    def dies_mid_stream(sock: socket.socket) -> None:  # what a kill -9 leaves: a chunked body never ended
        with sock:
            connection, _ = sock.accept()
            with connection:
                connection.recv(65536)
                head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                connection.sendall(head + b"%x\r\n%b\r\n" % (len(first), first))
                time.sleep(0.2)

    sock = free_socket()
    sock.listen()
    port = sock.getsockname()[1]
    threading.Thread(target=dies_mid_stream, args=(sock,), daemon=True).start()
    router, _, url = router_url
    router.update_table(RoutingTable({"m": ModelEntry("m", (Endpoint("x", f"http://127.0.0.1:{port}"),))}, {}, {}))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    got = []
    with pytest.raises(openai.APIError, match="the instance failed mid-answer"):
        got.extend(chunk.choices[0].delta.content for chunk in stream)
    assert got == ["t0"]


def test_model_from_query_and_missing_model(upstreams, router_url):
    router, _, url = router_url
    router.update_table(table(upstreams))
    speech = httpx.post(f"{url}/v1/audio/speech?model=solo", content=b"raw", headers={"content-type": "text/plain"})
    assert speech.status_code == 200 and speech.headers["x-instance"] == "c"
    missing = httpx.post(f"{url}/v1/chat/completions", json={"messages": []})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "model_required"
    assert httpx.get(f"{url}/v2/nothing").status_code == 404


def test_a_router_without_a_table_says_so_rather_than_404():
    with serve(Router(None)) as url:
        for response in (chat(url, model="anything"), httpx.get(f"{url}/v1/models")):
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "no_routing_table"


def test_a_router_fed_by_a_watch_listens_once_its_first_table_is_in(upstreams):
    holder: list[Router] = []

    async def feed() -> None:  # a table watch whose server answers after a moment
        await asyncio.sleep(0.3)
        holder[0].update_table(table(upstreams))

    router = Router(None, companions=(feed,), first_table_wait_s=10.0)
    holder.append(router)
    with serve(router) as url:
        assert router.tabled  # started (and listening) only now
        assert chat(url).status_code == 200
