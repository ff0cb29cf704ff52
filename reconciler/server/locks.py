"""One owner per data dir and per SQLite file: an exclusive lock held for the server's life.

A second server on the same data dir would flip the agents between two sets and delete the
first one's ``server.json``; two on one SQLite file cannot share a lease (SQLite has no
server to hold one across machines). Either refuses to start with the holder's pid.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from reconciler.errors import ReconcilerError


class InUse(ReconcilerError):
    """Another server holds the lock: the message names it and what to do."""


def hold(path: Path, what: str, remedy: str) -> int:
    """Lock ``path`` (created 0600) for the life of the process; returns the descriptor to close."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InUse(f"another server (pid {holder}) already uses {what}; {remedy}") from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
