"""Router traffic per model for the status page, read from the router's own ``/metrics``.

Rates and the median come from the difference between two scrapes (the page asks every
2 s), so they describe the last few seconds, not the router's lifetime; totals are lifetime.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "reconciler_router_requests"
LATENCY = "reconciler_router_request_seconds"
MAX_METRICS_BYTES = 8 * 1024 * 1024


@dataclass
class Sample:
    at: float
    requests: dict[str, float] = field(default_factory=dict)  # model -> answered
    errors: dict[str, float] = field(default_factory=dict)  # model -> answered with status >= 500 or 429
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # model -> le -> cumulative count


def parse(text: str, at: float) -> Sample:
    sample = Sample(at)
    requests: defaultdict[str, float] = defaultdict(float)
    errors: defaultdict[str, float] = defaultdict(float)
    buckets: defaultdict[str, dict[float, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            model = s.labels.get("model", "")
            if family.name == REQUESTS and s.name.endswith("_total"):
                requests[model] += s.value
                code = s.labels.get("code", "")
                if code.isdigit() and (int(code) >= 500 or int(code) == 429):
                    errors[model] += s.value
            elif family.name == LATENCY and s.name.endswith("_bucket"):
                buckets[model][float(s.labels["le"])] = s.value
    sample.requests, sample.errors, sample.buckets = dict(requests), dict(errors), dict(buckets)
    return sample


def median(buckets: dict[float, float]) -> float | None:
    """The upper bound of the bucket holding the median request, in seconds (None: no requests)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    for bound in bounds:
        if buckets[bound] >= total / 2:
            return None if math.isinf(bound) else bound
    return None


def summarize(now: Sample, before: Sample | None) -> list[dict[str, Any]]:
    span = now.at - before.at if before is not None else 0.0
    rows = []
    for model in sorted(now.requests):
        total, errors = now.requests[model], now.errors.get(model, 0.0)
        window = now.buckets.get(model, {})
        rate = 0.0
        if before is not None and span > 0:
            rate = (total - before.requests.get(model, 0.0)) / span
            earlier = before.buckets.get(model, {})
            recent = {le: count - earlier.get(le, 0.0) for le, count in window.items()}
            window = recent if any(recent.values()) else window
        rows.append(
            {
                "model": model,
                "requests": int(total),
                "errors": int(errors),
                "requestsPerSecond": round(max(rate, 0.0), 3),
                "p50Seconds": median(window),
            }
        )
    return rows


class TrafficWatch:
    """Scrapes the router's /metrics and keeps the previous scrape for rates."""

    def __init__(self) -> None:
        self.previous: Sample | None = None

    async def read(self, router_url: str | None) -> dict[str, Any]:
        if not router_url:
            return {"routerUrl": None, "models": [], "error": "no router runs beside this server"}
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                response = await client.get(f"{router_url}/metrics")
            response.raise_for_status()
            if len(response.content) > MAX_METRICS_BYTES:
                raise ValueError("the router's metrics are too large")
            sample = parse(response.text, time.monotonic())
        except (httpx.HTTPError, ValueError) as exc:
            return {"routerUrl": router_url, "models": [], "error": f"{type(exc).__name__}: {exc}"}
        rows = summarize(sample, self.previous)
        self.previous = sample
        return {"routerUrl": router_url, "models": rows, "error": None}
