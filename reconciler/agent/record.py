"""What the agent must remember across its own restarts, written atomically to the data dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler.observe import InstanceSpec


class ProcessRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: int
    create_time: float
    spec_hash: str
    restarts: int = 0


class AgentRecord(BaseModel):
    """The accepted desired set with its generation, and the process of each instance."""

    model_config = ConfigDict(extra="forbid")

    generation: int = 0
    instances: list[InstanceSpec] = []
    processes: dict[str, ProcessRecord] = {}


def load_record(path: Path) -> AgentRecord:
    try:
        return AgentRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return AgentRecord()
    except (OSError, ValueError, ValidationError):
        # A damaged record is set aside, not trusted: the reconciler sends the set again.
        path.replace(path.with_suffix(".damaged"))
        return AgentRecord()


def save_record(path: Path, record: AgentRecord) -> None:
    """Write to a temporary file, flush it to disk, then rename over the old record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(record.model_dump_json())
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
