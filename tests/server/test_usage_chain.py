"""Usage from request to `GET /api/usage`: the router meters what the upstream reports (plain,
streamed, embeddings), the store keeps it, the usage query sums it; exact against the
upstream's own usage fields. Requests without a key count as `anonymous`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from reconciler.router import Endpoint, ModelEntry, Router, RoutingTable
from reconciler.router.usage import UsageSum
from reconciler.server.routing import write_usage
from reconciler.server.store import Store, default_url
from reconciler.server.usage import query_usage
from tests.router.upstream import FakeUpstream, serve


class StoreUsage:
    """What `serve` hands the router: its sums written as the server writes routers' reports."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, rows: Sequence[UsageSum]) -> None:
        write_usage(self.store, rows)


def stream_usage(text: str) -> dict[str, int]:
    """The usage event of a server-sent stream (the client asked for it)."""
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    (usage,) = [e["usage"] for e in events if e.get("usage")]
    return dict(usage)


def test_plain_streamed_and_embedding_requests_sum_exactly(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    upstream = FakeUpstream("a")
    router = Router(StoreUsage(store))
    reported: dict[str, list[int]] = {"chat": [0, 0, 0], "embed": [0, 0, 0]}
    with serve(upstream) as upstream_url, serve(router) as url:
        entry = (Endpoint("a", upstream_url),)
        router.update_table(
            RoutingTable({"chat": ModelEntry("chat", entry), "embed": ModelEntry("embed", entry)}, {}, {})
        )
        question = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        streamed = {**question, "stream": True, "stream_options": {"include_usage": True}}
        for body in (question, question, streamed, {**streamed, "chunks": 7}):
            answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
            assert answer.status_code == 200
            usage = answer.json()["usage"] if "stream" not in body else stream_usage(answer.text)
            count = reported["chat"]
            reported["chat"] = [count[0] + 1, count[1] + usage["prompt_tokens"], count[2] + usage["completion_tokens"]]
        embedded = httpx.post(f"{url}/v1/embeddings", json={"model": "embed", "input": "x"}, timeout=10).json()
        reported["embed"] = [1, embedded["usage"]["prompt_tokens"], 0]
        deadline = time.monotonic() + 10

        def totals() -> dict[str, list[int]]:
            rows = query_usage(store.engine, ("key", "model"))
            assert {r["key"] for r in rows} <= {"anonymous"}
            return {r["model"]: [r["requests"], r["promptTokens"], r["completionTokens"]] for r in rows}

        while totals() != reported and time.monotonic() < deadline:
            time.sleep(0.1)
    assert totals() == reported
    store.close()
