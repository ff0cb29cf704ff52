"""What a large request body without the token costs a real agent: its RSS before and after.

    python bench/agent_body.py [MiB]   (default 300)

Starts ``reconcile agent`` on a free loopback port, sends ``PUT /v1/instances`` with no
token and a body of MiB mebibytes (streamed for as long as the agent reads it), and prints
the agent's RSS before and after (and its peak, Linux), the answer, and how much of the body was sent. Figures
are printed, never asserted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss(pid: int) -> int:
    """The kernel's high-water mark of the process's RSS (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main(mebibytes: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        token, port = Path(root) / "token", free_port()
        token.write_text("bench")
        argv = [sys.executable, "-m", "reconciler.cli", "agent", "--port", str(port), "--host", "127.0.0.1"]
        argv += ["--data-dir", f"{root}/data", "--token-file", str(token), "--worker-name", "bench"]
        agent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(150):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            process = psutil.Process(agent.pid)
            before = process.memory_info().rss
            size, sent, answer = mebibytes * MIB, 0, b""
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(f"PUT /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
                chunk = b"x" * MIB
                try:
                    while sent < size:
                        sock.sendall(chunk)
                        sent += len(chunk)
                except OSError:
                    pass  # the agent closed the connection
                try:
                    while data := sock.recv(65536):
                        answer += data
                except OSError:
                    pass
            elapsed = time.perf_counter() - started
            time.sleep(1)
            after = process.memory_info().rss
            peak = peak_rss(agent.pid)
            status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(no answer)"
            print(f"agent RSS before: {before / MIB:.0f} MiB")
            print(
                f"agent RSS after {mebibytes} MiB PUT without token: {after / MIB:.0f} MiB (peak {peak / MIB:.0f} MiB)"
            )
            print(f"answer: {status}; body sent before the agent closed: {sent / MIB:.0f} MiB; {elapsed:.2f} s")
        finally:
            agent.kill()
            agent.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
