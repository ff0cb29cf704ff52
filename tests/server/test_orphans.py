"""The server's planner process dies with the server, kill -9 included, and obeys SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from tests.conftest import ROOT

PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from reconciler.server.orphans import die_with_parent
if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent)
    print(pool.submit(os.getpid).result(), flush=True)
    time.sleep(120)
"""


def gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def start_parent(tmp_path) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.stdout.close()
    return parent, child


def test_planner_child_dies_with_a_killed_parent(tmp_path):
    parent, child = start_parent(tmp_path)
    try:
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        parent.wait()
        assert gone(child, 2.0)
    finally:
        if not gone(child, 0):
            os.kill(child, signal.SIGKILL)


def test_planner_child_obeys_sigterm(tmp_path):
    parent, child = start_parent(tmp_path)
    try:
        os.kill(child, signal.SIGTERM)
        assert gone(child, 2.0)
    finally:
        parent.kill()
        parent.wait()
