"""Active health checks: every interval, each member's health path (or its port, when it has none).

Probes use their own connections, closed after each probe, so they never keep a draining
instance's port busy.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp

from reconciler.router.table import Endpoint

if TYPE_CHECKING:
    from reconciler.router.app import Router

PROBE_TIMEOUT_S = 1.0


async def probe(session: aiohttp.ClientSession, endpoint: Endpoint) -> tuple[bool, str]:
    """(healthy, why not) for one instance."""
    try:
        if not endpoint.health_path:
            parts = urlsplit(endpoint.url)
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), PROBE_TIMEOUT_S)
            writer.close()
            return True, ""
        async with session.get(endpoint.url + endpoint.health_path) as response:
            if response.status == 200:
                return True, ""
            return False, f"health check answered {response.status}"
    except (aiohttp.ClientError, OSError) as exc:
        return False, f"health check failed: {type(exc).__name__}"
    except TimeoutError:
        return False, f"health check timed out after {PROBE_TIMEOUT_S:g}s"


async def probe_forever(router: Router, interval_s: float) -> None:
    """Probe every member each interval; swap in a new live table when one goes in or out."""
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        while True:
            targets = router.membership.targets()
            results = await asyncio.gather(*(probe(session, e) for e in targets))
            changed = False
            for endpoint, (ok, reason) in zip(targets, results, strict=True):
                changed |= router.membership.probed(endpoint, ok, reason)
            if changed:
                router.refresh()
            await asyncio.sleep(interval_s)
