"""The loop's requeue rule per outcome."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.server import requeue_after


def test_success_waits_the_interval_with_jitter() -> None:
    assert requeue_after("Applied", 30, 0) == 30
    assert requeue_after("UpToDate", 30, 0, jitter=0.5) == 31.5


def test_invalid_and_refused_wait_for_the_next_poll_only() -> None:
    assert requeue_after("Invalid", 30, 0) == 30
    assert requeue_after("Refused", 30, 0) == 30


def test_progress_is_looked_at_soon() -> None:
    assert requeue_after("Progressing", 30, 0) == 2
    assert requeue_after("Progressing", 1, 0) == 1


def test_unavailable_backs_off_exponentially_up_to_the_interval() -> None:
    waits = [requeue_after("SourceUnavailable", 60, n) for n in range(1, 9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert requeue_after("AgentUnavailable", 600, 20) == 300


@given(st.sampled_from(["SourceUnavailable", "AgentUnavailable"]), st.floats(0.001, 3600), st.integers(0, 100))
def test_backoff_is_bounded(outcome: str, interval: float, failures: int) -> None:
    wait = requeue_after(outcome, interval, failures)  # type: ignore[arg-type]
    assert 0 < wait <= 300
