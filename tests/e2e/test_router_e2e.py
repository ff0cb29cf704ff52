"""The official openai client -> the router -> real llama.cpp servers serving Gemma 3 270M.

Two instances: ``a`` plain, ``b`` with embeddings on. Both serve model ``gemma``; ``b`` alone
serves ``gemma-embed``. The last test kills ``b`` mid-run.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from reconciler.router import Endpoint, ModelEntry, Router, RoutingTable
from tests.router.upstream import free_socket, serve

pytestmark = pytest.mark.e2e
KEY = "rk-e2e-key"


def start_llama(gemma: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gemma), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--n_ctx", "2048", "--chat_format", "gemma", *extra]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"llama.cpp server at {url} did not start (exit {process.poll()})")


@pytest.fixture(scope="module")
def cluster(gemma_path: Path) -> Iterator[tuple[Router, str, dict[str, subprocess.Popen[bytes]]]]:
    pytest.importorskip("llama_cpp.server")
    a, a_url = start_llama(gemma_path)
    b, b_url = start_llama(gemma_path, "--embedding", "true")
    try:
        wait_ready(a, a_url)
        wait_ready(b, b_url)
        router = Router(None, cooldown_s=60)
        both = (Endpoint("a", a_url), Endpoint("b", b_url))
        router.update_table(
            RoutingTable(
                {"gemma": ModelEntry("gemma", both), "gemma-embed": ModelEntry("gemma-embed", both[1:])},
                {},
                {hashlib.sha256(KEY.encode()).hexdigest(): "e2e"},
            )
        )
        with serve(router) as url:
            yield router, url, {"a": a, "b": b}
    finally:
        for process in (a, b):
            process.kill()
            process.wait()


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=120, max_retries=0)


def ask(url: str, text: str = "Say hi") -> str:
    answer = client(url).chat.completions.create(
        model="gemma", messages=[{"role": "user", "content": text}], max_tokens=6
    )
    return answer.choices[0].message.content or ""


def test_models_list(cluster):
    _, url, _ = cluster
    assert sorted(m.id for m in client(url).models.list()) == ["gemma", "gemma-embed"]


def test_chat_plain(cluster):
    _, url, _ = cluster
    assert ask(url)


def test_chat_streamed_chunks_arrive_before_the_end(cluster):
    router, url, _ = cluster
    stream = client(url).chat.completions.create(
        model="gemma", messages=[{"role": "user", "content": "Count to twenty"}], max_tokens=24, stream=True
    )
    in_flight_at_chunk = []
    chunks = []
    for chunk in stream:
        in_flight_at_chunk.append(sum(router.balancer.inflight.values()))
        chunks.append(chunk)
    assert len(chunks) > 3
    assert in_flight_at_chunk[0] == 1  # the first chunk came while the instance was still generating
    assert all(chunk.usage is None for chunk in chunks)  # the injected usage chunk was removed


def test_completions(cluster):
    _, url, _ = cluster
    answer = client(url).completions.create(model="gemma", prompt="The sky is", max_tokens=4)
    assert answer.choices[0].text is not None and answer.usage is not None


def test_embeddings(cluster):
    _, url, _ = cluster
    answer = client(url).embeddings.create(model="gemma-embed", input="hello")
    assert answer.data and answer.data[0].embedding


def test_unknown_model_and_bad_key(cluster):
    _, url, _ = cluster
    with pytest.raises(openai.NotFoundError):
        client(url).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").models.list()


def test_both_instances_get_traffic(cluster):
    _, url, _ = cluster
    for _ in range(4):
        assert ask(url)
    text = httpx.get(f"{url}/metrics").text
    for instance in ("a", "b"):
        assert f'reconciler_router_routing_decisions_total{{instance="{instance}",model="gemma"}}' in text


def test_one_instance_killed_mid_run(cluster):
    _, url, processes = cluster
    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(ask, url, f"Say hi {n}") for n in range(12)]
        answers[0].result()
        processes["b"].kill()  # with requests in flight on it
        processes["b"].wait()
        assert all(answer.result() for answer in answers)
    assert all(ask(url) for _ in range(3))
