"""What the agent must remember across its own restarts, written atomically to the data dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler.errors import ReconcilerError
from reconciler.observe import InstanceSpec


class ProcessRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: int
    create_time: float
    spec_hash: str
    restarts: int = 0


class DrainRecord(BaseModel):
    """A process that left the set and is draining: what an agent restarted mid-drain needs
    to adopt it and finish the drain, rather than kill it as an orphan."""

    model_config = ConfigDict(extra="forbid")

    spec: InstanceSpec
    pid: int
    create_time: float
    deadline: float  # time.time() when the drain ends at the latest: a monotonic clock does not survive a restart
    restarts: int = 0


class AgentRecord(BaseModel):
    """The accepted desired set with its generation, the highest leader epoch seen, the
    process of each instance, and the processes still draining (by instance id; a
    replacement with the same id may be in ``instances`` meanwhile)."""

    model_config = ConfigDict(extra="forbid")

    epoch: int = 0
    generation: int = 0
    instances: list[InstanceSpec] = []
    processes: dict[str, ProcessRecord] = {}
    draining: dict[str, DrainRecord] = {}  # absent from records of earlier versions


class StartRefused(ReconcilerError):
    """The agent will not start on this data dir; the message says why and what to do."""


class RecordNotSaved(ReconcilerError):
    """The accepted set could not be written to disk: the set in force stays the one before,
    since a set acknowledged but not on disk would be undone by the agent's next start."""


class RecordDamaged(StartRefused):
    """``state.json`` cannot be read: the agent refuses to start rather than stop instances it
    can no longer account for. The last good copy lies beside it."""


def last_good(path: Path) -> Path:
    return path.with_name(path.stem + ".last-good.json")


def load_record(path: Path) -> AgentRecord:
    try:
        return AgentRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return AgentRecord()
    except (OSError, ValueError, ValidationError) as exc:
        good = last_good(path)
        remedy = (
            f"the last good copy is {good}: `cp {good} {path}` to resume from it"
            if good.exists()
            else f"no good copy exists: remove {path} to start from an empty set (which stops every instance)"
        )
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecordDamaged(
            f"{path} is damaged ({problem}); refusing to start rather than stop the instances it lists; {remedy}"
        ) from exc


def _write(path: Path, text: str) -> None:
    """Write to a temporary file (0600: it holds argv and env), flush it to disk, rename it over."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def save_record(path: Path, record: AgentRecord) -> None:
    """The last good copy first, then the record: a damaged record always has a whole copy beside it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # No drain, no field: an agent of the version before (which refuses unknown fields) can
    # still be rolled back to, unless it would have to resume a drain.
    text = record.model_dump_json(exclude=None if record.draining else {"draining"})
    _write(last_good(path), text)
    _write(path, text)
