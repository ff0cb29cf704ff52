"""The agent's HTTP API. Every route but /healthz needs the token (compared in constant time)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from reconciler.agent.detect import detect_backends, detect_gpus, system
from reconciler.agent.files import ModelFiles, file_id
from reconciler.agent.supervisor import Supervisor, tail
from reconciler.observe import InstalledBackend, InstanceSpec, Worker

log = logging.getLogger("reconciler.agent")


@dataclass
class AgentConfig:
    name: str
    ip: str
    port: int
    data_dir: Path
    cache_dir: Path
    token_sha256: str
    labels: dict[str, str] = field(default_factory=dict)
    port_range: str = "40000-40063"


class InstanceSet(BaseModel):
    """Body of ``PUT /v1/instances``: the full desired set and its generation."""

    model_config = ConfigDict(extra="forbid")

    generation: int = Field(ge=0)
    instances: list[InstanceSpec]


class LogLevel(BaseModel):
    level: str


def _token_checker(config: AgentConfig):  # type: ignore[no-untyped-def]
    expected = bytes.fromhex(config.token_sha256)

    def check(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = hashlib.sha256(token.encode()).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    return check


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

    app = FastAPI(title="reconciler agent", lifespan=lifespan)
    authorized = [Depends(_token_checker(config))]

    def worker_state() -> Worker:
        local_paths = [ref.path for spec in supervisor.record.instances for ref in spec.files if not ref.repo]
        return Worker.model_validate(
            {
                "name": config.name,
                "ip": config.ip,
                "state": "Ready",
                "labels": config.labels,
                **system(),
                "gpus": detect_gpus(),
                "instances": supervisor.observed(),
                "backends": backends,
                "files": files.listing(local_paths),
                "data_dir": str(config.data_dir),
                "cache_dir": str(config.cache_dir),
            }
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/state", dependencies=authorized)
    async def state() -> dict[str, object]:
        worker = await asyncio.to_thread(worker_state)
        return worker.model_dump(mode="json", by_alias=True)

    @app.put("/v1/instances", dependencies=authorized)
    async def put_instances(body: InstanceSet) -> dict[str, object]:
        ids = [spec.id for spec in body.instances]
        if len(ids) != len(set(ids)):
            raise HTTPException(422, "instance ids repeat")
        outcome = supervisor.accept(body.generation, body.instances)
        if outcome == "stale":
            raise HTTPException(
                409,
                f"generation {body.generation} is older than the accepted "
                f"{supervisor.record.generation} (or differs from it)",
            )
        return {"generation": supervisor.record.generation, "changed": outcome == "accepted"}

    @app.get("/v1/instances/{instance_id}/logs", dependencies=authorized, response_model=None)
    async def logs(
        instance_id: str, tail_lines: Annotated[int, Query(alias="tail", ge=0, le=100_000)] = 100, follow: bool = False
    ) -> PlainTextResponse | StreamingResponse:
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
            while True:
                await asyncio.sleep(0.5)
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

    @app.put("/v1/log-level", dependencies=authorized)
    async def log_level(body: LogLevel) -> dict[str, str]:
        level = logging.getLevelName(body.level.upper())
        if not isinstance(level, int):
            raise HTTPException(422, f"unknown level {body.level!r} (debug, info, warning, error)")
        logging.getLogger("reconciler").setLevel(level)
        return {"level": logging.getLevelName(level).lower()}

    @app.get("/v1/files", dependencies=authorized)
    async def list_files() -> list[dict[str, object]]:
        entries = await asyncio.to_thread(files.listing, [])
        return [{"id": file_id(e.path), **e.model_dump(mode="json", by_alias=True, exclude={"gguf"})} for e in entries]

    @app.delete("/v1/files/{identifier}", dependencies=authorized)
    async def delete_file(identifier: str) -> dict[str, str]:
        try:
            removed = await asyncio.to_thread(files.remove, identifier, supervisor.files_in_use())
        except PermissionError as exc:
            raise HTTPException(409, str(exc)) from exc
        if removed is None:
            raise HTTPException(404, f"no file {identifier}")
        return {"deleted": removed.path}

    return app
