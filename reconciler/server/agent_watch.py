"""Long-polls every agent of the current revision for changes, and wakes the loop on one.

The loop still polls the agents every ``--worker-poll`` seconds; the watch makes it look at
once when an instance starts, stops or fails, so a rollout step, a restart or a drain is
seen in a moment rather than a poll later. Only the leader watches: followers plan nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from reconciler.observe.client import changes_after, tls
from reconciler.spec import Agent

if TYPE_CHECKING:
    from reconciler.server.loop import Reconciler

log = logging.getLogger("reconciler.server")

WAIT_S = 25.0  # each long poll; the agent answers sooner on a change
RETRY_MAX_S = 2.0  # a restarted agent is seen within 2 s of answering; a refused connect costs little
FOLLOW_EVERY_S = 1.0  # how soon a new agent in the revision, or a new leader, starts being watched


async def watch_agent(agent: Agent, token: str | None, wake: Callable[[], None]) -> None:
    """Wake on each new version of one agent, a restarted agent's included."""
    since: int | None = None
    failures = 0
    timeout = httpx.Timeout(WAIT_S + 10.0, connect=3.0)
    async with httpx.AsyncClient(timeout=timeout, verify=tls()) as client:
        while True:
            try:
                version = await changes_after(client, agent, token, since, WAIT_S)
            except (httpx.HTTPError, ValueError):
                failures += 1
                await asyncio.sleep(min(2.0 ** (failures - 1), RETRY_MAX_S))
                continue
            failures = 0
            if since is not None and version != since:
                wake()
            since = version


async def follow_agents(rec: Reconciler, token: str | None) -> None:
    """Keep one watch per agent of the revision in force while this server leads."""
    watches: dict[tuple[str, str], asyncio.Task[None]] = {}
    try:
        while True:
            agents = rec.desired.cluster.spec.agents if rec.desired is not None and rec.leading else []
            wanted = {(a.name, str(a.url)): a for a in agents}
            for key in [k for k in watches if k not in wanted]:
                watches.pop(key).cancel()
            for key, agent in wanted.items():
                if key not in watches:
                    watches[key] = asyncio.create_task(watch_agent(agent, token, rec.wake.set), name=f"watch {key[0]}")
            await asyncio.sleep(FOLLOW_EVERY_S)
    finally:
        for task in watches.values():
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*watches.values(), return_exceptions=True)
