"""Nothing the agent acknowledges is lost (issue 16 item 8), against a real agent process.

The disk refuses the write by a directory standing where the temporary file of the
record goes: that stops root as well as anyone (chmod does not stop root).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from reconciler.agent import Supervisor
from reconciler.agent.files import ModelFiles
from reconciler.agent.record import AgentRecord, save_record
from tests.agent.test_hostile import AUTH, Agent, agent, spec

__all__ = ["agent"]


def running(instance: dict[str, object] | None) -> bool:
    return instance is not None and instance["pid"] is not None


def test_a_set_that_cannot_be_written_is_refused_and_the_old_one_kept(agent: Agent) -> None:
    assert agent.put([spec("old")]).status_code == 200
    old_pid = agent.wait("old", running)["pid"]

    blocker = agent.data / "state.last-good.json.tmp"
    blocker.mkdir()
    body = {"generation": agent.generation + 1, "instances": [spec("new")]}
    for _ in range(2):  # the same PUT again is refused again, never "200 changed: false"
        refused = httpx.put(f"{agent.url}/v1/instances", json=body, headers=AUTH, timeout=30)
        assert refused.status_code == 507, refused.text
        assert "cannot write" in refused.json()["detail"] and "unchanged" in refused.json()["detail"]
    assert agent.instance("new") is None
    assert agent.instance("old")["pid"] == old_pid  # type: ignore[index]

    blocker.rmdir()
    accepted = httpx.put(f"{agent.url}/v1/instances", json=body, headers=AUTH, timeout=30)
    assert accepted.status_code == 200 and accepted.json()["changed"] is True
    new_pid = agent.wait("new", running)["pid"]
    agent.wait("old", lambda i: i is None)

    # What was acknowledged survives a crash of the agent: the new set comes back, adopted.
    agent.kill()
    agent.start()
    assert agent.wait("new", running)["pid"] == new_pid
    assert agent.instance("old") is None


def test_generations_are_bounded(agent: Agent, tmp_path: Path) -> None:
    """One PUT of a huge generation must not lock every later reconciler out (issue 16 item 13)."""
    for generation in (2**70, 2**63, time.time_ns() + 2 * 3600 * 10**9):
        body = {"generation": generation, "instances": []}
        refused = httpx.put(f"{agent.url}/v1/instances", json=body, headers=AUTH, timeout=30)
        assert refused.status_code == 422, (generation, refused.text)
    now = {"generation": time.time_ns(), "instances": [spec("a")]}
    assert httpx.put(f"{agent.url}/v1/instances", json=now, headers=AUTH, timeout=30).status_code == 200

    # A record written before the bound, holding a generation far ahead: the next set is taken.
    record = tmp_path / "elsewhere" / "state.json"
    save_record(record, AgentRecord(generation=2**70))
    supervisor = Supervisor(record.parent, ModelFiles(tmp_path / "cache"))
    assert supervisor.record.generation == 0
    assert supervisor.accept(time.time_ns(), []) == "unchanged"  # the same (empty) set, now at this generation
    assert 0 < supervisor.record.generation <= time.time_ns()
