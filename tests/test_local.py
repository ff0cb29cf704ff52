"""`reconcile down` signals a recorded pid only while it is still the process `up` started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from reconciler.cli.local import ours

FAKE_ROUTER = "import sys, time; time.sleep(60)"


def started(argv: list[str]) -> tuple[subprocess.Popen[bytes], float]:
    process = subprocess.Popen(argv)
    return process, psutil.Process(process.pid).create_time()


def test_a_recorded_pid_counts_only_while_command_and_start_time_match(tmp_path: Path) -> None:
    # A process whose command line reads like `python -m reconciler.cli router ...`, but sleeps.
    router, created = started([sys.executable, "-c", FAKE_ROUTER, "reconciler.cli", "router"])
    other, _ = started([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert ours({"pid": router.pid, "createTime": created}, "router") == router.pid
        assert ours({"pid": router.pid, "createTime": created}, "agent") is None  # another command
        assert ours({"pid": router.pid, "createTime": created - 5}, "router") is None  # the pid was reused
        assert ours({"pid": other.pid}, "router") is None  # not ours at all
        assert ours({"pid": "1; rm"}, "router") is None and ours({}, "router") is None
        # server.json is written by the server after it started: a process newer than the file is not it.
        record = tmp_path / "server.json"
        record.write_text(json.dumps({"pid": router.pid}))
        os.utime(record, (created - 60, created - 60))
        assert ours({"pid": router.pid}, "router", record.stat().st_mtime) is None
        assert ours({"pid": router.pid}, "router", time.time()) == router.pid
    finally:
        for process in (router, other):
            process.kill()
            process.wait()
    assert ours({"pid": router.pid, "createTime": created}, "router") is None  # gone
