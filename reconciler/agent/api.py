"""The agent's HTTP API. Every route but /healthz needs the token (see ``gate``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

from reconciler.agent.changes import MAX_WAIT_S
from reconciler.agent.detect import detect_backends, detect_gpus, gpu_process_memory, system
from reconciler.agent.files import ModelFiles, file_id
from reconciler.agent.gate import MAX_BODY, Gate
from reconciler.agent.procs import children_table, describe, listeners
from reconciler.agent.record import RecordNotSaved
from reconciler.agent.supervisor import Supervisor, tail
from reconciler.agent.wire import INSTANCE_ID, BodyInvalid, InstanceSet, LogLevel, parse_body
from reconciler.observe import InstalledBackend, Worker

log = logging.getLogger("reconciler.agent")
FOLLOW_INTERVAL = 0.5
M = TypeVar("M", bound=BaseModel)


@dataclass
class AgentConfig:
    name: str
    ip: str
    port: int
    data_dir: Path
    cache_dir: Path
    token_sha256: str
    labels: dict[str, str] = field(default_factory=dict)
    port_range: str | None = None  # reported to the planner; None: the Cluster's portRange
    allow_exec: list[str] = field(default_factory=list)


async def read_body(request: Request, model: type[M]) -> M:
    """The body, capped as it streams (the gate already refused a larger declared length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, f"a request body is at most {MAX_BODY} bytes", headers={"Connection": "close"})
        chunks.append(chunk)
    try:
        return parse_body(b"".join(chunks), model)
    except BodyInvalid as exc:
        raise HTTPException(422, exc.problems) from exc


def create_app(config: AgentConfig, supervisor: Supervisor, files: ModelFiles) -> FastAPI:
    backends: list[InstalledBackend] = []

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        backends.extend(await asyncio.to_thread(detect_backends, config.data_dir))
        supervisor.adopt()
        task = asyncio.create_task(supervisor.run())
        yield
        task.cancel()
        await supervisor.close()

    # No /docs, /redoc or /openapi.json: the API is documented in docs/agent.md.
    app = FastAPI(title="reconciler agent", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Gate, token_sha256=config.token_sha256)

    def worker_state() -> Worker:
        local_paths = [ref.path for spec in supervisor.record.instances for ref in spec.files if not ref.repo]
        table = children_table()
        instances = supervisor.observed(gpu_process_memory(), table)
        ours = supervisor.pids(table)
        listening = listeners()
        foreign = [port for port, pids in listening.items() if not pids <= ours]
        wanted = {spec.port for spec in supervisor.record.instances}
        # Who took an instance's port: the planner names them when it moves the instance.
        holders = {port: describe(listening[port] - ours) for port in foreign if port in wanted}
        return Worker.model_validate(
            {
                "name": config.name,
                "ip": config.ip,
                "state": "Ready",
                "labels": config.labels,
                **system(),
                "gpus": detect_gpus(),
                "instances": instances,
                "backends": backends,
                "files": files.listing(local_paths),
                "ports_in_use": sorted(foreign),
                "port_range": config.port_range,
                "port_holders": holders,
                "data_dir": str(config.data_dir),
                "cache_dir": str(config.cache_dir),
            }
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/state")
    async def state() -> dict[str, object]:
        worker = await asyncio.to_thread(worker_state)
        return worker.model_dump(mode="json", by_alias=True)

    @app.get("/v1/changes")
    async def changes(
        since: int | None = None, wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 30.0
    ) -> dict[str, int]:
        """A long poll: answers once the instances' version differs from ``since``, or after ``wait`` s."""
        return {"version": await supervisor.changes.after(since, wait)}

    @app.put("/v1/instances")
    async def put_instances(request: Request) -> dict[str, object]:
        body = await read_body(request, InstanceSet)
        ids = [spec.id for spec in body.instances]
        if len(ids) != len(set(ids)):
            raise HTTPException(422, "instance ids repeat")
        try:
            outcome = supervisor.accept(body.generation, body.instances, body.epoch)
        except RecordNotSaved as exc:
            raise HTTPException(507, str(exc)) from exc
        if outcome == "stale":
            held = supervisor.record
            raise HTTPException(
                409,
                f"epoch {body.epoch} generation {body.generation} is older than the accepted "
                f"epoch {held.epoch} generation {held.generation} (or differs from it)",
            )
        return {"generation": supervisor.record.generation, "changed": outcome == "accepted"}

    @app.get("/v1/instances/{instance_id}/logs", response_model=None)
    async def logs(
        request: Request,
        instance_id: str,
        tail_lines: Annotated[int, Query(alias="tail", ge=0, le=100_000)] = 100,
        follow: bool = False,
    ) -> PlainTextResponse | StreamingResponse:
        if not INSTANCE_ID.match(instance_id):
            raise HTTPException(404, f"no instance {instance_id!r}")
        path = supervisor.log_path(instance_id)
        if instance_id not in supervisor.instances and not path.exists():
            raise HTTPException(404, f"no instance {instance_id}")
        lines = tail(path, tail_lines)
        if not follow:
            return PlainTextResponse("".join(f"{line}\n" for line in lines))

        async def stream() -> AsyncIterator[bytes]:
            for line in lines:
                yield f"{line}\n".encode()
            position = path.stat().st_size if path.exists() else 0
            # Ends when the client goes or the instance is no longer wanted here.
            while supervisor.wants(instance_id) and not await request.is_disconnected():
                await asyncio.sleep(FOLLOW_INTERVAL)
                size = path.stat().st_size if path.exists() else 0
                if size < position:  # rotated
                    position = 0
                if size > position:
                    with path.open("rb") as handle:
                        handle.seek(position)
                        chunk = handle.read(size - position)
                    position = size
                    yield chunk

        return StreamingResponse(stream(), media_type="text/plain")

    @app.put("/v1/log-level")
    async def log_level(request: Request) -> dict[str, str]:
        body = await read_body(request, LogLevel)
        level = logging.getLevelName(body.level.upper())
        if not isinstance(level, int):
            raise HTTPException(422, f"unknown level {body.level!r} (debug, info, warning, error)")
        logging.getLogger("reconciler").setLevel(level)
        return {"level": logging.getLevelName(level).lower()}

    @app.get("/v1/files")
    async def list_files() -> list[dict[str, object]]:
        entries = await asyncio.to_thread(files.listing, [])
        return [{"id": file_id(e.path), **e.model_dump(mode="json", by_alias=True, exclude={"gguf"})} for e in entries]

    @app.delete("/v1/files/{identifier}")
    async def delete_file(identifier: str) -> dict[str, str]:
        try:
            removed = await asyncio.to_thread(files.remove, identifier, supervisor.files_in_use())
        except PermissionError as exc:
            raise HTTPException(409, str(exc)) from exc
        if removed is None:
            raise HTTPException(404, f"no file {identifier}")
        return {"deleted": removed.path}

    return app
