"""Choosing instances: data cases and properties of the pure algorithms."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.router import (
    LOAD_FACTOR,
    Balancer,
    Endpoint,
    ModelEntry,
    Ring,
    RouteEntry,
    RoutingTable,
    SmoothWeighted,
)
from reconciler.router.balance import bounded_hash, least_request, prefix_key

EPS = tuple(Endpoint(f"i{n}", f"http://10.0.0.{n}:40000") for n in range(5))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=100), min_size=1, max_size=8), st.integers(0, 2000))
def test_weights_hold_within_2_percent_over_every_1000_window(weights, start):
    wrr = SmoothWeighted(tuple(weights))
    picks = [wrr.pick(range(len(weights))) for _ in range(start + 1000)]
    window = Counter(picks[start:])
    total = sum(weights)
    for index, weight in enumerate(weights):
        assert abs(window[index] - 1000 * weight / total) <= 20


def test_weights_90_10_exact_per_ten():
    wrr = SmoothWeighted((90, 10))
    picks = [wrr.pick([0, 1]) for _ in range(1000)]
    assert all(Counter(picks[i : i + 10])[1] == 1 for i in range(0, 1000, 10))


def test_weights_skip_unavailable_and_zero():
    wrr = SmoothWeighted((90, 10, 0))
    assert {wrr.pick([1, 2]) for _ in range(20)} == {1}
    assert wrr.pick([2]) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=5), st.integers(0, 10))
def test_least_request_picks_a_minimum(loads, turn):
    endpoints = EPS[: len(loads)]
    inflight = {e.id: load for e, load in zip(endpoints, loads, strict=True)}
    assert inflight[least_request(endpoints, inflight, turn).id] == min(loads)


def test_least_request_rotates_ties():
    assert [least_request(EPS[:3], {}, turn).id for turn in range(4)] == ["i0", "i1", "i2", "i0"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=200), st.integers(2, 5))
def test_chwbl_never_exceeds_the_bound(keys, count):
    endpoints = EPS[:count]
    ring = Ring.of(endpoints)
    inflight: dict[str, int] = {}
    for key in keys:  # requests that all stay in flight: the worst case for the bound
        total = sum(inflight.values()) + 1
        chosen = bounded_hash(ring, key, endpoints, inflight)
        inflight[chosen.id] = inflight.get(chosen.id, 0) + 1
        assert inflight[chosen.id] <= math.ceil(LOAD_FACTOR * total / count)


def test_chwbl_same_key_same_instance_when_idle_and_spreads_keys():
    ring = Ring.of(EPS)
    assert len({bounded_hash(ring, "system prompt", EPS, {}).id for _ in range(10)}) == 1
    assert len({bounded_hash(ring, f"prompt {n}", EPS, {}).id for n in range(50)}) == 5


def test_ring_moves_few_keys_when_an_instance_leaves():
    keys = [f"k{n}" for n in range(500)]
    before = {k: Ring.of(EPS).walk(k)[0] for k in keys}
    after = {k: Ring.of(EPS[:4]).walk(k)[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == EPS[4] for k in moved)


def test_prefix_key_uses_first_messages_and_prompt():
    body = {"messages": [{"role": "system", "content": "abc" * 10}, {"content": "question"}]}
    assert prefix_key(body, 12) == "abcabcabcabc"
    assert prefix_key({"prompt": "hello world"}, 5) == "hello"
    assert prefix_key({"input": ["first", "second"]}, 100) == "first"
    assert prefix_key({}, 10) == ""


def test_route_order_is_weighted_pick_then_targets_then_fallback():
    table = RoutingTable(
        {
            "a": ModelEntry("a", EPS[:1]),
            "b": ModelEntry("b", EPS[1:2]),
            "c": ModelEntry("c", EPS[2:3]),
            "down": ModelEntry("down"),
        },
        {"r": RouteEntry("r", (("a", 1), ("b", 3), ("down", 5)), ("c",))},
    )
    balancer = Balancer()
    orders = [[e.name for e in balancer.models_for(table, "r")] for _ in range(4)]
    assert orders == [["b", "a", "c"], ["a", "b", "c"], ["b", "a", "c"], ["b", "a", "c"]]
    assert [e.name for e in balancer.models_for(table, "a")] == ["a"]
    assert balancer.models_for(table, "nope") == []


def test_cooldown_skips_a_failed_instance_until_it_expires():
    balancer = Balancer(cooldown_s=10)
    entry = ModelEntry("m", EPS[:2])
    balancer.failed(EPS[0], now=100.0)
    assert {balancer.pick(entry, {}, None, set(), 105.0) for _ in range(4)} == {EPS[1]}
    assert {balancer.pick(entry, {}, None, set(), 111.0) for _ in range(4)} == set(EPS[:2])
    balancer.failed(EPS[1], now=100.0)
    balancer.failed(EPS[0], now=100.0)
    assert balancer.pick(entry, {}, None, set(), 101.0) is not None  # all cooling: still try one


def test_session_affinity_ignores_load():
    balancer = Balancer()
    entry = ModelEntry("m", EPS)
    first = balancer.pick(entry, {}, "session-1", set(), 0.0)
    assert first is not None
    balancer.inflight[first.id] = 50
    assert balancer.pick(entry, {}, "session-1", set(), 0.0) == first


def test_forget_stale_drops_gone_instances():
    balancer = Balancer()
    balancer.inflight.update({"i0": 0, "gone": 0, "busy-gone": 2})
    balancer.cooling.update({"gone": 5.0})
    balancer.forget_stale(RoutingTable({"m": ModelEntry("m", EPS[:1])}))
    assert balancer.inflight == {"i0": 0, "busy-gone": 2} and balancer.cooling == {}
