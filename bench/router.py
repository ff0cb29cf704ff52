"""Router overhead: direct vs through our router vs through LiteLLM's proxy, in one run.

An OpenAI-shaped upstream on loopback (tests/router/upstream.py, its own process) answers
every request. Each proxy runs in its own process with one worker. The load generator
(aiohttp, this process) measures latency p50/p99 at concurrency 1 and 32, requests/s at 32,
and the time to the first byte of a streamed answer. Also measured, to justify the choices:
our router served by uvicorn's pure-Python h11 on asyncio's loop, and the least forwarder
one can build on each client (our h1, aiohttp, httpx): what the client alone costs.

The same upstream is also deployed the way users run it: `reconcile up` (its own router
process, an API key in the Cluster, metering to the server, health probes), with the
upstream as a `custom` Model; that router is measured against the deployed instance itself.

Targets, for the deployed router: added p50 <= 0.5 ms and p99 <= 2 ms at c=1, req/s at
c=32 >= 50% of direct; and >= 10x LiteLLM. LiteLLM is installed into its own venv
(.venv-litellm under the checkout, or $LITELLM_VENV) when missing; the bench skips it with
a line saying why if that fails.

    python bench/router.py [--requests 4000] [--no-litellm] [--no-deployed] [--gemma]

``--gemma`` adds the prefix-hash effect on two real llama.cpp Gemma instances: TTFT of
requests that share one of four long system prompts, least-request vs prefix-hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LITELLM_VENV = Path(os.environ.get("LITELLM_VENV", str(ROOT / ".venv-litellm")))
BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
KEY = "sk-" + "5eb1" * 16  # every proxy checks it: LiteLLM as its master key, ours by its SHA-256
GEMMA = Path("/tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf")
OURS = "router (h1, httptools+uvloop)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the processes under test ------------------------------------------------------------


def serve_upstream(port: int) -> None:
    import uvicorn

    from tests.router.upstream import FakeUpstream

    uvicorn.run(
        FakeUpstream("up"),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def serve_router(port: int, upstreams: list[str], http: str, loop: str, strategy: str) -> None:
    import hashlib

    import uvicorn

    from reconciler.router import Endpoint, ModelEntry, Router, RoutingTable

    router = Router(None)
    endpoints = tuple(Endpoint(f"i{n}", url) for n, url in enumerate(upstreams))
    model = ModelEntry("m", endpoints, strategy=strategy)  # type: ignore[arg-type]
    router.update_table(RoutingTable({"m": model}, {}, {hashlib.sha256(KEY.encode()).hexdigest(): "bench"}))
    uvicorn.run(
        router,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop=loop,
        http=http,
        proxy_headers=False,
    )


def serve_forwarder(port: int, upstream: str, client_name: str) -> None:
    """The least a proxy built on one HTTP client does: read, forward, stream back. No routing
    at all: what the client alone costs (httpx, aiohttp, or our h1)."""
    import uvicorn

    forward = {"httpx": _via_httpx, "aiohttp": _via_aiohttp, "h1": _via_h1}[client_name](upstream)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await forward(scope["path"], body, send)

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools"
    )


Forward = Callable[[str, bytes, Any], Any]


async def _start(send: Any, status: int, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})


def _via_httpx(upstream: str) -> Forward:
    clients: list[httpx.AsyncClient] = []

    async def forward(path: str, body: bytes, send: Any) -> None:
        if not clients:
            clients.append(httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=256)))
        headers = {"content-type": "application/json"}
        request = clients[0].build_request("POST", upstream + path, content=body, headers=headers)
        response = await clients[0].send(request, stream=True)
        await _start(send, response.status_code, response.headers["content-type"].encode())
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await response.aclose()
        await send({"type": "http.response.body", "body": b""})

    return forward


def _via_aiohttp(upstream: str) -> Forward:
    sessions: list[aiohttp.ClientSession] = []

    async def forward(path: str, body: bytes, send: Any) -> None:
        if not sessions:
            connector = aiohttp.TCPConnector(limit=0, ssl=False)
            sessions.append(aiohttp.ClientSession(connector=connector, auto_decompress=False))
        headers = {"content-type": "application/json"}
        async with sessions[0].post(upstream + path, data=body, headers=headers) as response:
            await _start(send, response.status, response.headers["content-type"].encode())
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return forward


def _via_h1(upstream: str) -> Forward:
    from reconciler.router.h1 import Pool

    pools: list[Pool] = []

    async def forward(path: str, body: bytes, send: Any) -> None:
        if not pools:
            pools.append(Pool(upstream))
        async with pools[0].request("POST", path, [(b"content-type", b"application/json")], body) as response:
            await _start(send, response.status, response.content_type.encode())
            async for chunk in response.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return forward


@contextmanager
def process(argv: list[str], ready_url: str, env: dict[str, str] | None = None, wait_s: float = 120) -> Iterator[None]:
    with tempfile.TemporaryFile() as log:  # not a pipe: a chatty child (llama.cpp) would block on a full one
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                if child.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{' '.join(argv[:3])} did not start: {log.read().decode()[-800:]}")
                try:
                    httpx.get(ready_url, timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            yield
        finally:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def self_argv(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def ensure_litellm() -> Path | None:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print(f"installing litellm[proxy] into {LITELLM_VENV} (once) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LiteLLM: skipped, it could not be installed ({exc})")
        return None
    return binary if binary.exists() else None


# --- the load ----------------------------------------------------------------------------


async def one(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the end)."""
    started = time.perf_counter()
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        first = None
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}")
    return first or 0.0, time.perf_counter() - started


async def load(url: str, concurrency: int, count: int, body: dict[str, Any]) -> tuple[list[float], list[float], float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(200, count)):
            await one(session, url, body)  # warm the pools and caches
        firsts: list[float] = []
        totals: list[float] = []
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                first, total = await one(session, url, body)
                firsts.append(first)
                totals.append(total)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return firsts, totals, count / (time.perf_counter() - started)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def measure(name: str, url: str, requests: int, body: dict[str, Any] = BODY) -> dict[str, float]:
    _, c1, _ = asyncio.run(load(url, 1, max(500, requests // 4), body))
    _, _, rps = asyncio.run(load(url, 32, requests, body))
    firsts, _, _ = asyncio.run(load(url, 1, 300, {**body, "stream": True, "chunks": 8}))
    row = {"p50": pct(c1, 50), "p99": pct(c1, 99), "rps": rps, "ttfb": pct(firsts, 50)}
    print(f"{name:<34} {row['p50']:7.2f} {row['p99']:7.2f} {row['rps']:9.0f} {row['ttfb']:8.2f}", flush=True)
    return row


def overhead(requests: int, with_litellm: bool) -> None:
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    print(f"{'':<34} {'p50 ms':>7} {'p99 ms':>7} {'req/s@32':>9} {'ttfb ms':>8}   (c=1 latency; streamed TTFB p50)")
    rows: dict[str, dict[str, float]] = {}
    with process(self_argv("--serve-upstream", str(up_port)), f"{upstream}/v1/models"):
        rows["direct"] = measure("direct", f"{upstream}/v1/chat/completions", requests)
        variants: list[tuple[str, list[str]]] = [
            (OURS, ["--serve-router", upstream, "httptools", "uvloop"]),
            ("router (h1, h11+asyncio)", ["--serve-router", upstream, "h11", "asyncio"]),
            ("minimal forwarder on h1", ["--serve-forwarder", upstream, "h1"]),
            ("minimal forwarder on aiohttp", ["--serve-forwarder", upstream, "aiohttp"]),
            ("minimal forwarder on httpx", ["--serve-forwarder", upstream, "httpx"]),
        ]
        for name, args in variants:
            port = free_port()
            with process(self_argv(*args[:1], str(port), *args[1:]), f"http://127.0.0.1:{port}/metrics"):
                rows[name] = measure(name, f"http://127.0.0.1:{port}/v1/chat/completions", requests)
        binary = ensure_litellm() if with_litellm else None
        if binary is not None:
            try:
                rows["litellm"] = litellm_row(binary, upstream, requests)
            except RuntimeError as exc:
                print(f"LiteLLM: skipped, it did not start: {str(exc)[-300:]}")
        elif with_litellm:
            print("LiteLLM: skipped (not installed)")
    ours, direct = rows[OURS], rows["direct"]
    print()
    print(
        f"added by our router at c=1: p50 {ours['p50'] - direct['p50']:.2f} ms (target <= 1), "
        f"p99 {ours['p99'] - direct['p99']:.2f} ms (target <= 3)"
    )
    print(f"req/s at c=32: {ours['rps'] / direct['rps']:.0%} of direct (target >= 35%)")
    print(f"streamed TTFB added: {ours['ttfb'] - direct['ttfb']:.2f} ms")
    if "litellm" in rows:
        lite = rows["litellm"]
        print(
            f"req/s at c=32: {ours['rps'] / lite['rps']:.1f}x LiteLLM (target >= 10x); "
            f"LiteLLM adds p50 {lite['p50'] - direct['p50']:.2f} ms, p99 {lite['p99'] - direct['p99']:.2f} ms"
        )


def deployed(requests: int) -> None:
    """The router as `reconcile up` runs it, against the instance it routes to."""
    import hashlib

    from bench.chaos import Cluster, wait_until

    with tempfile.TemporaryDirectory(prefix="reconciler-bench-") as folder:
        cluster = Cluster(Path(folder) / "data")
        cluster.replicas = 1
        try:
            cluster.up()
            config = cluster.data / "repo" / "cluster.yaml"
            digest = hashlib.sha256(KEY.encode()).hexdigest()
            config.write_text(
                config.read_text(encoding="utf-8")
                + f"  router:\n    apiKeys:\n      - {{name: bench, sha256: {digest}}}\n",
                encoding="utf-8",
            )
            cluster.commit("bench: an API key, the upstream as a custom Model")
            body = {**BODY, "model": "echo"}
            router = f"{cluster.routers[0]}/v1/chat/completions"

            def routed() -> bool:
                try:
                    answer = httpx.post(router, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
                except httpx.HTTPError:
                    return False
                return answer.status_code == 200

            wait_until(routed, 180, "the deployed router answers with the key")
            (instance,) = cluster.echo_instances()
            direct = measure("direct (the deployed instance)", f"{instance['url']}/v1/chat/completions", requests, body)
            ours = measure("router as `up` runs it (keys, metering)", router, requests, body)
        finally:
            cluster.stop()
    print(
        f"added by the deployed router at c=1: p50 {ours['p50'] - direct['p50']:.2f} ms (target <= 0.5), "
        f"p99 {ours['p99'] - direct['p99']:.2f} ms (target <= 2); "
        f"req/s at c=32: {ours['rps'] / direct['rps']:.0%} of direct (target >= 50%)"
    )


def litellm_row(binary: Path, upstream: str, requests: int) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "litellm.yaml"
        config.write_text(
            json.dumps(
                {
                    "model_list": [
                        {
                            "model_name": "m",
                            "litellm_params": {"model": "openai/m", "api_base": f"{upstream}/v1", "api_key": "unused"},
                        }
                    ],
                    "litellm_settings": {"telemetry": False, "drop_params": True},
                }
            )
        )
        env = {
            **os.environ,
            "LITELLM_MASTER_KEY": KEY,
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "NO_DOCS": "True",
        }
        argv = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        with process(argv, f"http://127.0.0.1:{port}/health/liveliness", env=env, wait_s=240):
            return measure("litellm proxy (1 worker)", f"http://127.0.0.1:{port}/v1/chat/completions", requests)


# --- prefix-hash on real Gemma ---------------------------------------------------------


def gemma_prefix(requests: int) -> None:
    if not GEMMA.exists():
        print(f"prefix-hash on Gemma: skipped ({GEMMA} missing)")
        return
    ports = [free_port(), free_port()]
    uppers = [f"http://127.0.0.1:{p}" for p in ports]
    prompts = [
        f"You are assistant number {n}. " + " ".join(f"Rule {n}.{i}: answer briefly and kindly." for i in range(70))
        for n in range(4)
    ]
    rng = random.Random(7)
    sequence = [rng.randrange(4) for _ in range(requests)]
    print(
        f"\nprefix-hash on two llama.cpp Gemma instances: {requests} requests, 4 system prompts "
        f"of ~{len(prompts[0]) // 4} tokens, random order, one at a time"
    )

    def argv(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(GEMMA),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--chat_format",
            "gemma",
        ]

    with (
        process(argv(ports[0]), f"{uppers[0]}/v1/models", wait_s=180),
        process(argv(ports[1]), f"{uppers[1]}/v1/models", wait_s=180),
    ):
        for strategy in ("least-request", "prefix-hash"):
            port = free_port()
            with process(
                self_argv("--serve-router", str(port), *uppers, "httptools", "uvloop", strategy),
                f"http://127.0.0.1:{port}/metrics",
            ):
                ttfts = asyncio.run(gemma_ttfts(f"http://127.0.0.1:{port}/v1/chat/completions", prompts, sequence))
            print(f"  {strategy:<14} TTFT p50 {pct(ttfts, 50):7.1f} ms   mean {statistics.mean(ttfts) * 1000:7.1f} ms")


async def gemma_ttfts(url: str, prompts: list[str], sequence: list[int]) -> list[float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        out = []
        for n, index in enumerate(sequence):
            body = {
                "model": "m",
                "stream": True,
                "max_tokens": 2,
                "messages": [{"role": "system", "content": prompts[index]}, {"role": "user", "content": f"Q{n}?"}],
            }
            first, _ = await one(session, url, body)
            out.append(first)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests at concurrency 32")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-deployed", action="store_true", help="skip the router as `reconcile up` runs it")
    parser.add_argument("--gemma", action="store_true", help="also measure prefix-hash TTFT on real Gemma")
    parser.add_argument("--only-gemma", action="store_true", help="measure only the prefix-hash effect")
    parser.add_argument("--gemma-requests", type=int, default=40)
    args = parser.parse_args()
    if not args.only_gemma:
        overhead(args.requests, not args.no_litellm)
        if not args.no_deployed:
            print()
            deployed(args.requests)
    if args.gemma or args.only_gemma:
        gemma_prefix(args.gemma_requests)


def _serve_router(args: list[str]) -> None:
    """PORT UPSTREAM... HTTP LOOP [STRATEGY]"""
    urls = [a for a in args[1:] if a.startswith("http://")]
    rest = [a for a in args[1:] if not a.startswith("http://")]
    serve_router(int(args[0]), urls, rest[0], rest[1], rest[2] if len(rest) > 2 else "least-request")


SERVE: dict[str, Callable[[list[str]], None]] = {
    "--serve-upstream": lambda a: serve_upstream(int(a[0])),
    "--serve-router": _serve_router,
    "--serve-forwarder": lambda a: serve_forwarder(int(a[0]), a[1], a[2]),
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in SERVE:
        SERVE[sys.argv[1]](sys.argv[2:])
    else:
        main()
