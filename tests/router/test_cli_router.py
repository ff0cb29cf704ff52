"""`reconcile keys new` and `reconcile router` (standalone, polling a live agent API)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import httpx
from typer.testing import CliRunner

from reconciler.cli import app
from tests.conftest import ROOT
from tests.router.upstream import FakeUpstream, free_socket, serve

runner = CliRunner()


def test_keys_new_prints_key_once_and_its_hash_line():
    result = runner.invoke(app, ["keys", "new", "ci"])
    assert result.exit_code == 0, result.output
    key = re.search(r"shown once, keep it secret\): (\S+)", result.output).group(1)
    line = re.search(r"- \{name: ci, sha256: ([0-9a-f]{64})\}", result.output)
    assert line and line.group(1) == hashlib.sha256(key.encode()).hexdigest()
    assert runner.invoke(app, ["keys", "new", "ci"]).output != result.output


def test_keys_new_refuses_a_bad_name():
    result = runner.invoke(app, ["keys", "new", "Not A Label"])
    assert result.exit_code == 1 and "DNS label" in result.output


def test_router_without_keys_refuses_a_public_address(write):
    path = write("apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: c}\n")
    result = runner.invoke(app, ["router", str(path.parent), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "loopback only" in result.output


class FakeAgent:
    """Answers GET /v1/state with one worker running one instance of ``chat`` on ``port``."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        state = {
            "name": "local",
            "ip": "127.0.0.1",
            "memoryTotal": 1,
            "instances": [
                {"id": "chat-0", "model": "chat", "backend": "llama-cpp", "argv": [], "port": self.port},
                {"id": "chat-1", "model": "chat", "backend": "llama-cpp", "argv": [], "port": 1, "state": "Starting"},
            ],
        }
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(state).encode()})


def test_standalone_router_routes_to_what_the_agents_report(tmp_path):
    upstream = FakeUpstream("chat-0")
    with serve(upstream) as upstream_url, serve(FakeAgent(int(upstream_url.rsplit(":", 1)[1]))) as agent_url:
        (tmp_path / "cluster.yaml").write_text(
            "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {name: c}\n"
            f"spec:\n  agents: [{{name: local, url: '{agent_url}'}}]\n"
            "---\napiVersion: reconciler/v1\nkind: Model\nmetadata: {name: chat}\n"
            "spec:\n  source: {localPath: /m/chat.gguf}\n"
        )
        sock = free_socket()
        port = sock.getsockname()[1]
        sock.close()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "reconciler.cli", "router", str(tmp_path), "--port", str(port)]
        process = subprocess.Popen([*argv, "--interval", "0.2"], env=env, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            models: list[str] = []
            while time.monotonic() < deadline and not models:
                try:
                    models = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
                except httpx.HTTPError:
                    time.sleep(0.1)
            assert models == ["chat"]
            answer = httpx.post(f"{url}/v1/chat/completions", json={"model": "chat", "messages": []})
            assert answer.status_code == 200 and answer.headers["x-instance"] == "chat-0"
        finally:
            process.terminate()
            _, err = process.communicate(timeout=10)
        assert "router: http://127.0.0.1:" in err.decode()
