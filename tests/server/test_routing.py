"""The routing table routers follow: built purely from the plan, served as a long-polled watch,
and the usage report that routers send back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from bench.simulated import SimulatedAgents
from reconciler.observe import ObservedState
from reconciler.server import ServerConfig, WorkerBook, serve, server_file
from reconciler.server.routing import routing_doc
from reconciler.source import DirSource
from tests.plan.helpers import apply, desired, run, worker
from tests.server.test_hosting import MODEL, free_port, until

CLUSTER = """
apiVersion: reconciler/v1
kind: Cluster
metadata: {name: test}
spec:
  agents: [{name: a, url: "http://a"}, {name: b, url: "http://b"}]
  router: {apiKeys: [{name: ci, sha256: "%s"}]}
""" % ("ab" * 32)


def book(observed: ObservedState) -> WorkerBook:
    records = WorkerBook()
    records.update(observed.workers, {}, 0.0)
    return records


def test_table_lists_the_plans_instances_with_their_agents_report() -> None:
    d = desired(MODEL.format(replicas=2), CLUSTER)
    empty = ObservedState.of([worker("a"), worker("b")])
    running = apply(run(d, empty), empty)
    doc = routing_doc(d, run(d, running), book(running).records)
    endpoints = doc["models"]["web"]["endpoints"]
    assert [e["id"] for e in endpoints] == ["web-0", "web-1"]
    ips = {w.name: w.ip for w in running.workers}
    placed = {i.id: (w.name, i.port) for w in running.workers for i in w.instances}
    for e in endpoints:
        where, port = placed[e["id"]]
        assert e["url"] == f"http://{ips[where]}:{port}" and e["healthPath"] == "/" and e["ready"] is True
    assert doc["apiKeys"] == {"ab" * 32: "ci"} and doc["routes"] == {}
    # Before any agent reported them, they are listed but not ready: routers wait.
    fresh = routing_doc(d, run(d, empty), book(empty).records)
    assert [e["ready"] for e in fresh["models"]["web"]["endpoints"]] == [False, False]


def test_a_returning_workers_stale_copy_is_not_listed() -> None:
    d = desired(MODEL.format(replicas=1), CLUSTER)
    empty = ObservedState.of([worker("a"), worker("b")])
    running = apply(run(d, empty), empty)
    (home,) = [w for w in running.workers if w.instances]
    other = next(w for w in running.workers if w.name != home.name)
    # The same instance id also reported by the other worker (a stale copy that came back).
    stale = other.model_copy(update={"instances": home.instances})
    both = ObservedState.of([home, stale])
    doc = routing_doc(d, run(d, running), book(both).records)
    assert [e["url"] for e in doc["models"]["web"]["endpoints"]] == [f"http://{home.ip}:{home.instances[0].port}"]


def test_watch_and_usage_report_over_http(tmp_path: Path) -> None:
    agents = SimulatedAgents(["a"]).start()
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "cluster.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: t}\n"
        f"spec:\n  agents: [{{name: a, url: '{agents.url('a')}'}}]\n  sync: {{interval: 1h}}\n"
    )
    (folder / "web.yaml").write_text(MODEL.format(replicas=1))
    config = ServerConfig(data_dir=tmp_path / "data", host="127.0.0.1", port=free_port(), worker_poll=0.3)

    async def scenario() -> None:
        task = asyncio.create_task(serve(config, DirSource(folder)))
        await until(lambda: server_file(config.data_dir).exists())
        info = json.loads(server_file(config.data_dir).read_text())
        auth = {"Authorization": f"Bearer {(config.data_dir / 'token').read_text().strip()}"}

        def watch(**params: Any) -> httpx.Response:
            return httpx.get(f"{info['url']}/api/routing", params=params, headers=auth, timeout=30)

        assert (await asyncio.to_thread(httpx.get, f"{info['url']}/api/routing")).status_code == 401

        def listed() -> list[dict[str, Any]]:
            answer = watch()
            return answer.json()["models"]["web"]["endpoints"] if answer.status_code == 200 else []

        await until(lambda: [e["ready"] for e in listed()] == [True])
        first = (await asyncio.to_thread(watch, router="http://127.0.0.1:9")).json()
        held = await asyncio.to_thread(watch, known=first["digest"], wait=0.5)
        assert held.status_code == 304
        waiting = asyncio.create_task(asyncio.to_thread(watch, known=first["digest"], wait=9))
        await asyncio.sleep(0.5)
        (folder / "web.yaml").write_text(MODEL.format(replicas=2))
        started = time.monotonic()
        changed = await waiting
        assert changed.status_code == 200 and time.monotonic() - started < 9
        assert changed.json()["version"] > first["version"] and changed.json()["digest"] != first["digest"]
        status = await asyncio.to_thread(httpx.get, f"{info['url']}/api/status", headers=auth)
        assert status.json()["routerUrl"] == "http://127.0.0.1:9"  # the first router that watched

        row = {"key": "ci", "model": "web", "day": "2026-01-02", "promptTokens": 5, "completionTokens": 2}
        report = {"batch": "b1", "rows": [{**row, "requests": 3, "errors": 1}]}
        for _ in range(2):  # the same batch twice (a retry): counted once
            answer = await asyncio.to_thread(httpx.post, f"{info['url']}/api/usage/report", json=report, headers=auth)
            assert answer.status_code == 200
        bad = await asyncio.to_thread(
            httpx.post, f"{info['url']}/api/usage/report", json={"batch": "x", "rows": [{"key": "k"}]}, headers=auth
        )
        assert bad.status_code == 422
        os.kill(os.getpid(), signal.SIGTERM)
        await task
        from reconciler.server.store import Store, default_url

        rows = Store(default_url(config.data_dir)).usage()
        assert [(r["api_key_name"], r["prompt_tokens"], r["requests"], r["errors"]) for r in rows] == [("ci", 5, 3, 1)]

    try:
        asyncio.run(scenario())
    finally:
        agents.stop()
