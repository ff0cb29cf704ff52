"""How long `reconcile up` takes to the first answer of the `chat` route, with the quickstart's
two models (SmolLM2-135M-Instruct and Gemma 3 270M) and with SmolLM2 alone, then `down`.
Each run has a fresh data dir and config dir; the router listens on up's port (10170).

    python bench/quickstart.py [--runs 1]

Needs llama.cpp (scripts/install-llama-cpp) and both GGUFs (scripts/fetch-gemma, scripts/fetch-smollm2).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler.cli.local import seed_repo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def up_seconds(root: Path, only_smollm2: bool) -> float:
    data = root / "data"
    agent_port = free_port()
    if only_smollm2:  # a repo seeded the same way, less Gemma: `up` keeps an existing repo
        repo = data / "repo"
        seed_repo(repo, f"http://127.0.0.1:{agent_port}")
        (repo / "gemma.yaml").unlink()
        git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@invalid"]
        subprocess.run([*git, "commit", "-qam", "SmolLM2 only"], check=True)
    env = {**os.environ, "XDG_CONFIG_HOME": str(root / "config"), "RECONCILER_DATA_DIR": str(data)}
    cli = [sys.executable, "-m", "reconciler.cli"]
    started = time.perf_counter()
    ports = ["--port", str(free_port()), "--agent-port", str(agent_port)]
    up = subprocess.run([*cli, "up", *ports], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    subprocess.run([*cli, "down"], env=env, capture_output=True, check=False)
    if up.returncode != 0:
        raise SystemExit(f"reconcile up failed:\n{up.stdout}\n{up.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    runs = parser.parse_args().runs
    for label, only in (("SmolLM2 alone", True), ("SmolLM2 + Gemma", False)):
        figures = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="bench-quickstart-") as root:
                figures.append(up_seconds(Path(root), only))
        print(f"up to the first chat answer, {label}: median {statistics.median(figures):.1f} s over {runs} runs")


if __name__ == "__main__":
    main()
