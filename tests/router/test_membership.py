"""Membership as pure logic: the server's table says who may serve, probes say who does."""

from __future__ import annotations

import pytest

from reconciler.router.membership import FAILS_TO_LEAVE, Membership
from reconciler.router.table import DocInvalid, Endpoint, ModelEntry, RoutingTable, table_from_doc


def table(*endpoints: Endpoint) -> RoutingTable:
    return RoutingTable({"m": ModelEntry("m", tuple(endpoints))})


A = Endpoint("m-0", "http://10.0.0.1:40000", "/v1/models", "h1")
B = Endpoint("m-1", "http://10.0.0.2:40000", "/v1/models", "h1")


def served(members: Membership, listed: RoutingTable) -> list[str]:
    return [e.id for e in members.live(listed).models["m"].endpoints]


def test_out_after_two_failures_back_after_one_success() -> None:
    members = Membership()
    listed = table(A, B)
    members.offer(listed)
    assert served(members, listed) == ["m-0", "m-1"]
    assert not members.probed(A, False, "health check failed: ClientConnectorError")
    assert served(members, listed) == ["m-0", "m-1"]  # one failure is not enough
    assert FAILS_TO_LEAVE == 2 and members.probed(A, False, "health check answered 503")
    assert served(members, listed) == ["m-1"]
    assert members.why_down(listed.models["m"]) == "m-0: health check answered 503"
    assert members.probed(A, True) and served(members, listed) == ["m-0", "m-1"]


def test_a_new_table_keeps_health_and_never_revives_a_failed_member() -> None:
    members = Membership()
    members.offer(table(A, B))
    members.probed(B, False, "down")
    members.probed(B, False, "down")
    # The server sends the same instances again (e.g. its agent went NotReady: ready=False now).
    again = table(A, Endpoint(B.id, B.url, B.health_path, B.spec_hash, False))
    members.offer(again)
    assert served(members, again) == ["m-0"]


def test_control_plane_signals_never_remove_a_healthy_member() -> None:
    members = Membership()
    members.offer(table(A))
    unreported = table(Endpoint(A.id, A.url, A.health_path, A.spec_hash, ready=False))  # agent unreachable
    members.offer(unreported)
    assert served(members, unreported) == ["m-0"]


def test_a_replacement_waits_for_its_agents_running_report() -> None:
    members = Membership()
    members.offer(table(A))
    replaced = Endpoint(A.id, A.url, A.health_path, "h2", ready=False)  # same port, new spec
    members.offer(table(replaced))
    assert served(members, table(replaced)) == []
    assert not members.probed(replaced, True)  # the old process answering must not admit it
    assert members.why_down(table(replaced).models["m"]) == "m-0: not Running yet"
    members.offer(table(Endpoint(A.id, A.url, A.health_path, "h2", ready=True)))
    assert served(members, table(replaced)) == ["m-0"]


def test_deleted_members_are_forgotten() -> None:
    members = Membership()
    members.offer(table(A, B))
    members.offer(table(B))
    assert members.targets() == [B]


def test_table_from_doc() -> None:
    doc = {
        "version": 3,
        "models": {
            "m": {
                "strategy": "prefix-hash",
                "prefixChars": 64,
                "sessionHeader": None,
                "genericProxy": True,
                "endpoints": [{"id": "m-0", "url": "http://h:1/", "healthPath": "/health", "specHash": "x"}],
            }
        },
        "routes": {"alias": {"targets": [["m", 9]], "fallback": ["m"]}},
        "apiKeys": {"ab": "ci"},
    }
    parsed = table_from_doc(doc)
    entry = parsed.models["m"]
    assert entry.endpoints == (Endpoint("m-0", "http://h:1", "/health", "x", True),)
    assert entry.strategy == "prefix-hash" and entry.session_header is None and entry.generic_proxy
    assert parsed.routes["alias"].targets == (("m", 9),) and parsed.api_keys == {"ab": "ci"}
    for broken in ({}, {"models": {"m": {}}}, {"models": {"m": {"endpoints": [{"url": "x"}]}}}, {"models": []}):
        with pytest.raises(DocInvalid):
            table_from_doc(broken)
