"""Start the agent: resolve its settings, read the token, serve the API with uvicorn."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
from pathlib import Path

import uvicorn

from reconciler.agent.api import AgentConfig, create_app
from reconciler.agent.files import ModelFiles
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return hashlib.sha256(token.encode()).hexdigest(), path


def run_agent(config: AgentConfig, host: str, debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.cache_dir.mkdir(parents=True, exist_ok=True)
    files = ModelFiles(config.cache_dir, os.environ.get("HF_ENDPOINT"), os.environ.get("HF_TOKEN"))
    supervisor = Supervisor(config.data_dir, files)
    app = create_app(config, supervisor, files)
    uvicorn.run(app, host=host, port=config.port, log_level="debug" if debug else "info", access_log=debug)
