"""`serve()` in-process: a watched folder, simulated agents, and a hosted ASGI app (the router's hook)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.simulated import SimulatedAgents
from reconciler.observe import ObservedState
from reconciler.server import HostedApp, ServerConfig, serve, server_file
from reconciler.source import DirSource
from reconciler.spec import Desired
from tests.net import free_port

MODEL = """\
apiVersion: reconciler/v1
kind: Model
metadata: {{name: web}}
spec:
  source: {{localPath: /bin/sh}}
  backend: custom
  replicas: {replicas}
  custom: {{command: "serve --port {{{{ port }}}}", healthPath: /}}
"""


async def until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def test_watched_folder_hosted_router_and_on_state(tmp_path: Path) -> None:
    agents = SimulatedAgents(["a"]).start()
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "cluster.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: t}\n"
        f"spec:\n  agents: [{{name: a, url: '{agents.url('a')}'}}]\n  sync: {{interval: 1h}}\n"
    )
    (folder / "web.yaml").write_text(MODEL.format(replicas=1))
    seen: list[tuple[Desired, ObservedState]] = []
    router = Starlette(routes=[Route("/v1/models", lambda _r: PlainTextResponse("router here"))])
    config = ServerConfig(data_dir=tmp_path / "data", host="127.0.0.1", port=free_port(), worker_poll=0.3)
    hosted = HostedApp(router, free_port(), "127.0.0.1")

    async def scenario() -> None:
        task = asyncio.create_task(
            serve(config, DirSource(folder), on_state=lambda d, o: seen.append((d, o)), router=hosted)
        )
        await until(lambda: server_file(config.data_dir).exists())
        info = json.loads(server_file(config.data_dir).read_text())
        assert info["routerUrl"] == f"http://127.0.0.1:{hosted.port}"
        await until(lambda: len(agents.agents["a"].instances) == 1)
        answer = await asyncio.to_thread(httpx.get, f"{info['routerUrl']}/v1/models")
        assert answer.text == "router here"
        (folder / "web.yaml").write_text(MODEL.format(replicas=2))  # watchfiles triggers a fetch
        await until(lambda: len(agents.agents["a"].instances) == 2)
        token = (config.data_dir / "token").read_text().strip()

        def status() -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(
                f"{info['url']}/api/status", headers={"Authorization": f"Bearer {token}"}
            ).json()
            return body

        await until(lambda: status()["models"][0]["ready"] == 2)
        body = await asyncio.to_thread(status)
        assert body["routerUrl"] == info["routerUrl"]
        assert body["models"] == [{"name": "web", "desired": 2, "ready": 2, "pending": [], "rollout": None}]
        unauthorized = await asyncio.to_thread(httpx.get, f"{info['url']}/api/status")
        assert unauthorized.status_code == 401
        os.kill(os.getpid(), signal.SIGTERM)  # the server owns SIGTERM while it runs: a clean stop
        await task
        assert not server_file(config.data_dir).exists()

    try:
        asyncio.run(scenario())
    finally:
        agents.stop()
    assert seen and all(d.models and o.workers for d, o in seen)
