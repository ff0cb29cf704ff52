"""The agent's one rule for sets, by (leader epoch, generation)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.agent.supervisor import fencing


def test_an_older_epoch_is_stale_whatever_its_generation() -> None:
    assert fencing((7, 100), (6, 10**18), same=False) == "stale"
    assert fencing((7, 100), (6, 10**18), same=True) == "stale"


def test_a_newer_epoch_is_taken_even_with_an_older_generation_or_the_same_set() -> None:
    assert fencing((7, 100), (8, 1), same=False) == "newer"
    assert fencing((7, 100), (8, 1), same=True) == "newer"  # taken, so the agent remembers epoch 8


def test_within_an_epoch_generations_order_sets() -> None:
    assert fencing((7, 100), (7, 99), same=True) == "stale"
    assert fencing((7, 100), (7, 100), same=True) == "unchanged"
    assert fencing((7, 100), (7, 100), same=False) == "stale"
    assert fencing((7, 100), (7, 101), same=False) == "newer"


def test_epoch_zero_is_outside_the_lease_and_compares_generations_only() -> None:
    assert fencing((7, 100), (0, 101), same=False) == "newer"  # reconcile apply / down
    assert fencing((7, 100), (0, 99), same=False) == "stale"


@given(st.integers(1, 2**62), st.integers(1, 2**62), st.integers(0, 2**62), st.integers(0, 2**62), st.booleans())
def test_a_lower_leader_epoch_never_passes(held: int, lower_by: int, generation: int, offered: int, same: bool) -> None:
    epoch = max(held - lower_by, 1)
    if epoch < held:
        assert fencing((held, generation), (epoch, offered), same) == "stale"
