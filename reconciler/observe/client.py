"""Ask every agent of a Cluster for its state, concurrently; an agent that fails is Unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
from pydantic import ValidationError

from reconciler.observe.snapshot import ObservedState
from reconciler.observe.state import Worker
from reconciler.spec import Agent

STATE_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


async def _one(client: httpx.AsyncClient, agent: Agent, token: str | None) -> Worker:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = await client.get(f"{agent.url.rstrip('/')}/v1/state", headers=headers)
        response.raise_for_status()
        worker = Worker.model_validate(response.json())
    except (httpx.HTTPError, ValueError, ValidationError):
        return Worker(name=agent.name, url=agent.url, state="Unreachable", memory_total=0)
    return worker.model_copy(update={"name": agent.name, "url": agent.url})


async def _all(agents: Sequence[Agent], token: str | None, timeout: httpx.Timeout) -> list[Worker]:
    async with httpx.AsyncClient(timeout=timeout) as client:
        return list(await asyncio.gather(*(_one(client, agent, token) for agent in agents)))


def observe_agents(agents: Sequence[Agent], token: str | None, timeout: httpx.Timeout = STATE_TIMEOUT) -> ObservedState:
    return ObservedState.of(asyncio.run(_all(agents, token, timeout)))
