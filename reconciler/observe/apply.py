"""Hand each agent its set: one rule for the server and ``reconcile apply``.

Only agents whose set differs from what they run are sent one; agents that are not ready
are skipped and reported; one agent's failure does not stop the others. The generation is
asked for only when something is sent, so an unchanged pass spends none.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from reconciler.observe.client import ApplyResult
from reconciler.observe.snapshot import ObservedState
from reconciler.observe.state import InstanceSpec
from reconciler.spec import Agent

Sets = Sequence[tuple[Agent, Sequence[InstanceSpec]]]
Put = Callable[[Sets, int], list[ApplyResult]]


@dataclass(frozen=True)
class Applied:
    sent: tuple[ApplyResult, ...]  # one per agent sent its set
    skipped: tuple[ApplyResult, ...]  # agents not ready: nothing sent
    unchanged: tuple[str, ...]  # agents that already run their set
    changed: bool = False  # some agent was sent a set that differs from what it runs

    @property
    def failed(self) -> tuple[ApplyResult, ...]:
        return tuple(r for r in self.sent if not r.ok)


def instances_key(specs: Sequence[InstanceSpec]) -> list[tuple[str, str]]:
    """What tells two sets apart: each instance's id and spec hash."""
    return sorted((s.id, s.spec_hash) for s in specs)


def apply_sets(
    agents: Sequence[Agent],
    sets: Mapping[str, Sequence[InstanceSpec]],
    observed: ObservedState,
    ready: Collection[str],
    put: Put,
    generation: Callable[[], int],
    resend: Collection[str] = (),
) -> Applied:
    """Send every ready agent whose set differs its full set, concurrently (through ``put``).

    Agents in ``resend`` get their set even when it is unchanged: a new leader's epoch must
    reach every agent once.
    """
    # A draining instance has left its agent's set already: it is no drift.
    running = {w.name: instances_key([i for i in w.instances if i.state != "Draining"]) for w in observed.workers}
    drift = []
    unchanged = []
    for agent in agents:
        if agent.name not in ready:
            continue
        wanted = sets.get(agent.name, [])
        if instances_key(wanted) == running.get(agent.name, []):
            unchanged.append(agent.name)
        if agent.name in resend or agent.name not in unchanged:
            drift.append((agent, wanted))
    skipped = tuple(
        ApplyResult(a.name, False, f"not ready at {a.url}; not applied") for a in agents if a.name not in ready
    )
    sent = tuple(put(drift, generation())) if drift else ()
    changed = any(agent.name not in unchanged for agent, _ in drift)
    return Applied(sent, skipped, tuple(unchanged), changed)
