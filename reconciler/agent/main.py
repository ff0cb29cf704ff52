"""Start the agent: resolve its settings, read the token, serve the API with uvicorn."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import socket
import stat
from pathlib import Path

import uvicorn

from reconciler.agent.api import AgentConfig, create_app
from reconciler.agent.files import ModelFiles
from reconciler.agent.guard import GuardedHttpProtocol
from reconciler.agent.record import StartRefused
from reconciler.agent.supervisor import Supervisor


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/reconciler")
    return Path(os.path.expanduser("~/.local/share/reconciler"))


def default_ip() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def read_or_create_token(token_file: Path | None, data_dir: Path) -> tuple[str, Path]:
    """The token's SHA-256 (the token itself is not kept); creates ``<data-dir>/token`` when none is given."""
    path = token_file or data_dir / "token"
    if token_file is None and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return hashlib.sha256(token.encode()).hexdigest(), path


def secure_data_dir(path: Path) -> None:
    """Only this user may read the data dir: the state and logs hold argv and env."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & stat.S_ISVTX:
        raise StartRefused(f"{path} is a shared directory (sticky bit, as /tmp); give the agent a data dir of its own")
    if info.st_uid != os.geteuid():
        raise StartRefused(f"{path} belongs to another user (uid {info.st_uid}); give the agent a data dir of its own")
    path.chmod(0o700)


def lock_data_dir(path: Path) -> int:
    """Hold ``<data-dir>/agent.lock`` for the life of the process: one agent per data dir.

    A second agent would adopt, restart or kill the first one's instances. The descriptor
    is not inherited by instances (Python opens it close-on-exec), so an instance that
    outlives its agent does not keep the lock.
    """
    fd = os.open(path / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartRefused(
            f"another agent (pid {holder}) already runs on {path}; stop it or use another --data-dir"
        ) from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def run_agent(config: AgentConfig, host: str, debug: bool) -> None:
    """Serve until stopped; raises StartRefused when this data dir cannot be used."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    secure_data_dir(config.data_dir)
    lock = lock_data_dir(config.data_dir)
    config.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = ModelFiles(config.cache_dir, os.environ.get("HF_ENDPOINT"), os.environ.get("HF_TOKEN"))
    supervisor = Supervisor(config.data_dir, files, allow_exec=config.allow_exec)
    app = create_app(config, supervisor, files)
    try:
        uvicorn.run(
            app,
            host=host,
            port=config.port,
            http=GuardedHttpProtocol,  # header timeout and connection cap
            log_level="debug" if debug else "info",
            access_log=debug,
        )
    finally:
        os.close(lock)
