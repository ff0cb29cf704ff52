"""`reconcile keys new` and `reconcile router` as its own process, following a server's table."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from typer.testing import CliRunner

from reconciler.cli import app
from tests.conftest import ROOT
from tests.router.fake_server import TOKEN, FakeServer, doc_of
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


def test_router_refuses_a_server_that_is_not_a_url():
    result = runner.invoke(app, ["router", "--server", "localhost:10160"])
    assert result.exit_code == 1 and "--server localhost:10160: not an http(s) URL" in result.output


def free_port() -> int:
    sock = free_socket()
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@contextmanager
def router_process(tmp_path: Path, *servers: str, extra: tuple[str, ...] = ()) -> Iterator[str]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    port = free_port()
    argv = [sys.executable, "-m", "reconciler.cli", "router", "--port", str(port), "--token-file", str(token)]
    for server in servers:
        argv += ["--server", server]
    argv += extra
    process = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait(lambda: _get(f"{url}/healthz") is not None, 30), "the router did not start"
        yield url
    finally:
        process.terminate()
        process.communicate(timeout=15)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def chat(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": []}, timeout=10)


def test_router_follows_the_table_reports_usage_and_outlives_the_server(tmp_path):
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with serve(a) as a_url, serve(b) as b_url:
        server = FakeServer(doc_of({"a": a_url}))
        hosting = serve(server)
        server_url = hosting.__enter__()
        # The first server never answers: the router goes on to the next one.
        with router_process(tmp_path, "http://127.0.0.1:1", server_url) as url:
            assert wait(lambda: _get(f"{url}/healthz").json()["status"] == "ok", 15)
            assert chat(url).headers["x-instance"] == "a"
            server.publish(doc_of({"b": b_url}))  # a leaves the table, b comes in
            assert wait(lambda: chat(url).headers["x-instance"] == "b", 5)
            assert any(w.startswith("http://127.0.0.1:") for w in server.watchers)
            missing = httpx.post(f"{url}/v1/chat/completions", json={"model": "gone", "messages": []})
            assert missing.status_code == 404
            assert wait(lambda: sum(r["requests"] for rep in server.reports for r in rep["rows"]) >= 2, 10)
            rows = [r for rep in server.reports for r in rep["rows"]]
            assert {(r["key"], r["model"]) for r in rows} == {("-", "m")}  # no row for a name nobody serves
            assert sum(r["promptTokens"] for r in rows) >= 10 and not any(r["errors"] for r in rows)
            hosting.__exit__(None, None, None)  # the server goes away
            assert wait(lambda: _get(f"{url}/healthz").json()["status"] == "stale", 30)
            health = _get(f"{url}/healthz").json()
            assert health["tableVersion"] == 2 and health["error"]
            assert "reconciler_router_table_stale 1.0" in _get(f"{url}/metrics").text
            answers = [chat(url) for _ in range(5)]  # routing goes on, on the last table
            assert all(r.status_code == 200 and r.headers["x-instance"] == "b" for r in answers)


def test_router_restarted_while_no_server_answers_starts_from_its_kept_table(tmp_path):
    kept = tmp_path / "table.json"
    upstream = FakeUpstream("a")
    with serve(upstream) as a_url:
        with (
            serve(FakeServer(doc_of({"a": a_url}))) as server_url,
            router_process(tmp_path, server_url, extra=("--table-file", str(kept))) as url,
        ):
            assert wait(lambda: _get(f"{url}/healthz").json()["status"] == "ok", 15)
            assert wait(kept.exists, 5) and oct(kept.stat().st_mode & 0o777) == "0o600"
        # The server is gone, and so was the router: a new one routes on the kept table.
        with router_process(tmp_path, "http://127.0.0.1:1", extra=("--table-file", str(kept))) as url:
            health = _get(f"{url}/healthz").json()
            assert health["status"] == "stale" and health["tableVersion"] == 1
            assert health["error"]
            assert chat(url).headers["x-instance"] == "a"
