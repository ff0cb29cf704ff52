"""The current cluster, like kubectl's current context.

``reconcile up`` records the data dir of the cluster it started in
``$XDG_CONFIG_HOME/reconciler/current.json`` (``~/.config/reconciler/`` by default), so
``reconcile status``, ``logs``, ``usage`` and ``down`` typed in any shell find it without
``--data-dir``. An explicit ``--data-dir``, ``RECONCILER_DATA_DIR`` or ``--server`` wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "reconciler"


def context_file() -> Path:
    return config_dir() / "current.json"


def remember(data_dir: Path) -> None:
    """Make ``data_dir`` the current cluster (written atomically)."""
    path = context_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"dataDir": str(data_dir)}) + "\n", encoding="utf-8")
    temporary.replace(path)


def current_data_dir() -> Path | None:
    try:
        body = json.loads(context_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = body.get("dataDir") if isinstance(body, dict) else None
    return Path(value) if isinstance(value, str) and value else None
