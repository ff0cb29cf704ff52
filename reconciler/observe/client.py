"""Talk to the agents of a Cluster, concurrently: read their state, hand them their sets.

An agent that does not answer is reported Unreachable; one that fails a PUT does not
stop the others. ``AgentClient`` is the whole of the server's agent I/O, so the loop can
be driven against a fake of this network edge.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
from pydantic import ValidationError

from reconciler.observe.snapshot import ObservedState
from reconciler.observe.state import InstanceSpec, Worker
from reconciler.spec import Agent


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for every client: building one reads the CA bundle, 40 ms each time."""
    return httpx.create_ssl_context()


STATE_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
STATE_DEADLINE = 10.0  # seconds for one state answer, connect to last byte: a trickling host is Unreachable
MAX_STATE_BYTES = 64 * 1024 * 1024


async def _read_capped(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> bytes:
    async with client.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_STATE_BYTES:
                raise ValueError(f"a state answer over {MAX_STATE_BYTES} bytes")
        return bytes(body)


async def _one(client: httpx.AsyncClient, agent: Agent, token: str | None) -> Worker:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        url = f"{agent.url.rstrip('/')}/v1/state"
        body = await asyncio.wait_for(_read_capped(client, url, headers), STATE_DEADLINE)
        worker = Worker.model_validate(json.loads(body))
    except (httpx.HTTPError, ValueError, ValidationError, TimeoutError, RecursionError):
        return Worker(name=agent.name, url=agent.url, state="Unreachable", memory_total=0)
    return worker.model_copy(update={"name": agent.name, "url": agent.url})


async def _all(agents: Sequence[Agent], token: str | None, timeout: httpx.Timeout) -> list[Worker]:
    async with httpx.AsyncClient(timeout=timeout, verify=tls()) as client:
        return list(await asyncio.gather(*(_one(client, agent, token) for agent in agents)))


def observe_agents(agents: Sequence[Agent], token: str | None, timeout: httpx.Timeout = STATE_TIMEOUT) -> ObservedState:
    return ObservedState.of(asyncio.run(_all(agents, token, timeout)))


async def changes_after(
    client: httpx.AsyncClient, agent: Agent, token: str | None, since: int | None, wait_s: float
) -> int:
    """An agent's change version, once it differs from ``since`` (a long poll of ``wait_s`` at most)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params: dict[str, str | float] = {"wait": wait_s} if since is None else {"wait": wait_s, "since": str(since)}
    response = await client.get(f"{agent.url.rstrip('/')}/v1/changes", params=params, headers=headers)
    response.raise_for_status()
    version = response.json().get("version")
    if not isinstance(version, int):
        raise ValueError("an answer without a version")
    return version


async def _healthy(client: httpx.AsyncClient, agent: Agent) -> bool:
    try:
        return (await client.get(f"{agent.url.rstrip('/')}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _health_all(agents: Sequence[Agent], timeout: httpx.Timeout) -> dict[str, bool]:
    async with httpx.AsyncClient(timeout=timeout, verify=tls()) as client:
        answers = await asyncio.gather(*(_healthy(client, agent) for agent in agents))
    return {agent.name: ok for agent, ok in zip(agents, answers, strict=True)}


def probe_health(agents: Sequence[Agent], timeout: httpx.Timeout = STATE_TIMEOUT) -> dict[str, bool]:
    """Whether each agent's /healthz answers (no token needed): tells NotReady from Unreachable."""
    return asyncio.run(_health_all(agents, timeout))


@dataclass(frozen=True)
class ApplyResult:
    agent: str
    ok: bool
    detail: str
    refused: bool = False  # 409: the agent holds a newer epoch or generation (we are fenced)


async def _put(
    client: httpx.AsyncClient,
    agent: Agent,
    token: str | None,
    fence: tuple[int, int],
    instances: Sequence[InstanceSpec],
) -> ApplyResult:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    epoch, generation = fence
    body = {
        "epoch": epoch,
        "generation": generation,
        "instances": [i.model_dump(mode="json", by_alias=True) for i in instances],
    }
    try:
        response = await client.put(f"{agent.url.rstrip('/')}/v1/instances", json=body, headers=headers)
    except httpx.HTTPError as exc:
        return ApplyResult(agent.name, False, f"cannot reach {agent.url}: {type(exc).__name__}")
    if response.status_code == 200:
        changed = response.json().get("changed")
        return ApplyResult(
            agent.name, True, f"{len(instances)} instances, generation {generation}{'' if changed else ' (no change)'}"
        )
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return ApplyResult(agent.name, False, f"HTTP {response.status_code}: {detail}", response.status_code == 409)


async def _put_all(
    sets: Sequence[tuple[Agent, Sequence[InstanceSpec]]],
    token: str | None,
    fence: tuple[int, int],
    timeout: httpx.Timeout,
) -> list[ApplyResult]:
    async with httpx.AsyncClient(timeout=timeout, verify=tls()) as client:
        return list(await asyncio.gather(*(_put(client, a, token, fence, s) for a, s in sets)))


def put_instances(
    sets: Sequence[tuple[Agent, Sequence[InstanceSpec]]],
    token: str | None,
    generation: int,
    timeout: httpx.Timeout = STATE_TIMEOUT,
    *,
    epoch: int = 0,
) -> list[ApplyResult]:
    """PUT every agent its full set, concurrently; one agent's failure does not stop the others.

    ``epoch`` is the sending leader's; an agent that has seen a higher one refuses (409).
    """
    return asyncio.run(_put_all(sets, token, (epoch, generation), timeout))


class AgentClient(Protocol):
    """The server's agent I/O: read every agent's state, probe health, hand out sets."""

    def observe(self, agents: Sequence[Agent]) -> ObservedState: ...

    def health(self, agents: Sequence[Agent]) -> dict[str, bool]: ...

    def put(
        self, sets: Sequence[tuple[Agent, Sequence[InstanceSpec]]], generation: int, epoch: int
    ) -> list[ApplyResult]: ...


class HttpAgentClient:
    """AgentClient over the agents' HTTP API, with the operator's agent token."""

    def __init__(self, token: str | None, timeout: httpx.Timeout = STATE_TIMEOUT) -> None:
        self.token = token
        self.timeout = timeout

    def observe(self, agents: Sequence[Agent]) -> ObservedState:
        return observe_agents(agents, self.token, self.timeout)

    def health(self, agents: Sequence[Agent]) -> dict[str, bool]:
        return probe_health(agents, self.timeout)

    def put(
        self, sets: Sequence[tuple[Agent, Sequence[InstanceSpec]]], generation: int, epoch: int
    ) -> list[ApplyResult]:
        return put_instances(sets, self.token, generation, self.timeout, epoch=epoch)
