"""Router traffic for the status page, from the router's own /metrics text."""

from __future__ import annotations

from prometheus_client import generate_latest

from reconciler.router.metrics import RouterMetrics
from reconciler.server.traffic import Sample, median, parse, summarize


def scrape(metrics: RouterMetrics, at: float) -> Sample:
    return parse(generate_latest(metrics.registry).decode(), at)


def test_rates_errors_and_median_between_two_scrapes() -> None:
    metrics = RouterMetrics()
    for _ in range(10):
        metrics.requests.labels("chat", "200").inc()
        metrics.latency.labels("chat").observe(0.02)
    before = scrape(metrics, 100.0)
    for _ in range(6):
        metrics.requests.labels("chat", "200").inc()
        metrics.latency.labels("chat").observe(0.4)
    for code in ("502", "429", "404"):
        metrics.requests.labels("chat", code).inc()
    (row,) = summarize(scrape(metrics, 102.0), before)
    assert row["model"] == "chat" and row["requests"] == 19
    assert row["errors"] == 2  # 5xx and 429; a 404 is the client's mistake
    assert row["requestsPerSecond"] == 4.5  # 9 more answers in 2 s
    assert row["p50Seconds"] == 0.5  # the recent requests, not the lifetime's fast ones


def test_first_scrape_uses_lifetime_figures_and_no_requests_have_no_median() -> None:
    metrics = RouterMetrics()
    metrics.requests.labels("embed", "200").inc()
    metrics.latency.labels("embed").observe(0.003)
    (row,) = summarize(scrape(metrics, 1.0), None)
    assert (row["requestsPerSecond"], row["p50Seconds"]) == (0.0, 0.005)
    assert median({}) is None and median({float("inf"): 0.0}) is None
