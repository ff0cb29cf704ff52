"""Simulated node agents on loopback: many agents behind one HTTP server, one path prefix each.

Each speaks the agent API the server uses (``/healthz``, ``GET /v1/state``, ``PUT /v1/instances``
with generation fencing) and reports every instance it was handed as Running at once, with no
process behind it. A test can take an agent down (every request fails, like a dead host) or set
an instance's state. Used by the server's tests and bench/converge.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

GIB = 1024**3


@dataclass
class SimulatedAgent:
    name: str
    memory_gib: int = 64
    generation: int = 0
    instances: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # instance id -> state other than Running
    down: bool = False
    puts: list[tuple[float, list[str]]] = field(default_factory=list)  # (time, instance ids) per accepted PUT

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ip": "127.0.0.1",
            "memoryTotal": self.memory_gib * GIB,
            "cpuCount": 16,
            "instances": [
                {**spec, "state": self.states.get(spec["id"], "Running"), "pid": None} for spec in self.instances
            ],
        }


class SimulatedAgents:
    def __init__(self, names: list[str], memory_gib: int = 64) -> None:
        self.agents = {name: SimulatedAgent(name, memory_gib) for name in names}
        self.base = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, name: str) -> str:
        return f"{self.base}/agents/{name}"

    def app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            agent = self.agents[request.path_params["name"]]
            return Response(status_code=503) if agent.down else JSONResponse({"status": "ok"})

        async def state(request: Request) -> Response:
            agent = self.agents[request.path_params["name"]]
            return Response(status_code=503) if agent.down else JSONResponse(agent.state())

        async def put(request: Request) -> Response:
            agent = self.agents[request.path_params["name"]]
            if agent.down:
                return Response(status_code=503)
            body = await request.json()
            if body["generation"] < agent.generation:
                return JSONResponse({"detail": "stale generation"}, status_code=409)
            changed = sorted(i["id"] for i in body["instances"]) != sorted(i["id"] for i in agent.instances)
            agent.generation, agent.instances = body["generation"], body["instances"]
            agent.puts.append((time.monotonic(), [i["id"] for i in body["instances"]]))
            return JSONResponse({"generation": agent.generation, "changed": changed})

        return Starlette(
            routes=[
                Route("/agents/{name}/healthz", healthz),
                Route("/agents/{name}/v1/state", state),
                Route("/agents/{name}/v1/instances", put, methods=["PUT"]),
            ]
        )

    def start(self) -> SimulatedAgents:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning"))
        # Off the main thread uvicorn leaves the signal handlers alone.
        self._thread = threading.Thread(target=asyncio.run, args=(self._server.serve(),), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
