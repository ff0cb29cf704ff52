"""Instance ports: which ones a worker may hand out, and when a kept instance must leave its own.

Several agents on one host (one per GPU group) share its ports, so workers that report the
same IP share one port space. A worker's own range (its agent's ``--port-range``) wins over
the Cluster's ``portRange``; two known ranges that overlap on one IP are refused, naming
both workers. Pure: everything comes from the observed workers.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

from reconciler.observe import ObservedInstance, Worker, port_span

# The agent's words when an instance cannot start (see agent.supervisor).
_IN_USE = re.compile(r"cannot start: port (\d+) is in use by (.+)")


def port_taken(worker: Worker, instance: ObservedInstance) -> str | None:
    """Why an instance must move to another port of its worker: a process not its own holds it."""
    port = instance.port
    if port and port in worker.ports_in_use:
        return f"port {port} taken by {worker.port_holders.get(port, 'another process')}"
    found = _IN_USE.match(instance.message.split("\n", 1)[0])
    if found is not None and int(found[1]) == port:
        return f"port {port} taken by {found[2]}"
    return None


def range_overlaps(workers: Mapping[str, Worker]) -> dict[str, str]:
    """Per worker whose own port range overlaps another's on its IP: the reason, naming both."""
    by_ip: dict[str, list[Worker]] = defaultdict(list)
    for name in sorted(workers):
        if workers[name].port_range is not None:
            by_ip[workers[name].ip].append(workers[name])
    found: dict[str, str] = {}
    for ip, sharing in by_ip.items():
        for index, first in enumerate(sharing):
            for second in sharing[index + 1 :]:
                one, other = port_span(first.port_range or ""), port_span(second.port_range or "")
                if one.start < other.stop and other.start < one.stop:
                    why = (
                        f"port range {first.port_range} of worker {first.name} overlaps {second.port_range} "
                        f"of worker {second.name} on {ip}; give each agent on a host its own --port-range"
                    )
                    found.setdefault(first.name, why)
                    found.setdefault(second.name, why)
    return found


class PortBook:
    """The lowest free port of a worker's range, in the port space of its IP."""

    def __init__(self, workers: Mapping[str, Worker], cluster_range: range) -> None:
        self.workers = workers
        self.hosts = {name: w.ip for name, w in workers.items()}
        self.ranges = {name: port_span(w.port_range) for name, w in workers.items() if w.port_range}
        self.cluster_range = cluster_range
        self.used: dict[str, set[int]] = defaultdict(set)
        for worker in workers.values():
            self.used[worker.ip].update(worker.ports_in_use)
        self.overlaps = range_overlaps(workers)
        self.refusal = ""  # why the last take() found no port

    def _space(self, worker: str) -> set[int]:
        return self.used[self.hosts.get(worker, worker)]

    def hold(self, worker: str, port: int) -> None:
        self._space(worker).add(port)

    def evicted(self, members: Iterable[tuple[str, ObservedInstance]]) -> str | None:
        """Why one of a replica's instances must leave its port (that port is then held: the
        new instance gets another), or None."""
        for name, instance in members:
            why = port_taken(self.workers[name], instance) if name in self.workers else None
            if why is not None:
                self.hold(name, instance.port)
                return why
        return None

    def take(self, worker: str, prefer: int | None = None) -> int | None:
        if worker in self.overlaps:
            self.refusal = self.overlaps[worker]
            return None
        used, ports = self._space(worker), self.ranges.get(worker, self.cluster_range)
        if prefer is not None and prefer in ports and prefer not in used:
            used.add(prefer)
            return prefer
        for port in ports:
            if port not in used:
                used.add(port)
                return port
        where = "its agent's --port-range" if worker in self.ranges else "the Cluster's portRange"
        self.refusal = f"no free port on worker {worker} in {ports.start}-{ports.stop - 1} ({where})"
        return None
