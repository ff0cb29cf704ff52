"""The reduced chaos bench: one cycle of each fault against `reconcile up` under load.

No control-plane failure may fail a request: agent kill, server kill, scale-down and a
rollout fail none; a killed backend fails no request (streams cut on it end with an error,
none hangs); a killed router fails only what was in flight on it, and the clients' retry on
the other router succeeds. No instance runs twice, no planner outlives its server, and
`reconcile down` leaves no process behind. The figures go to stdout (pytest -s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import chaos, print_table


@pytest.mark.e2e
def test_one_cycle_of_every_fault(tmp_path: Path) -> None:
    rows, left = chaos(tmp_path / "data", cycles=1, seed=1, clients=6)
    print_table(rows)
    assert set(rows) == {"agent", "server", "router", "backend", "scale", "rollout"}
    for fault in ("agent", "server", "scale", "rollout"):
        assert rows[fault].failed == 0, (fault, rows[fault].kinds)
    assert all(kind.startswith("stream ") for kind in rows["backend"].kinds), rows["backend"].kinds
    assert all("mid-answer" in kind for kind in rows["router"].kinds), rows["router"].kinds
    assert all(row.sent > 0 and row.duplicates == 0 and row.orphans == 0 for row in rows.values())
    assert left == []
