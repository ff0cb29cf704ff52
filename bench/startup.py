"""Start-up cost of the CLI: `reconcile --version` and `reconcile validate examples/quickstart`
against a bare `python -c pass`, as CPU seconds (user + system) and wall seconds, median of runs.
Target: both commands within 10x the bare interpreter's CPU time.

    python bench/startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "reconcile --version": [sys.executable, "-m", "reconciler.cli", "--version"],
    "reconcile validate examples/quickstart": [
        sys.executable,
        "-m",
        "reconciler.cli",
        "validate",
        str(ROOT / "examples" / "quickstart"),
    ],
}


def measure(argv: list[str]) -> tuple[float, float]:
    """(CPU seconds of the child, wall seconds) of one run."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        assert process.stderr is not None
        raise SystemExit(f"{' '.join(argv)} exited {process.returncode}: {process.stderr.read().decode()}")
    return usage.ru_utime + usage.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    results: dict[str, tuple[float, float]] = {}
    for name, argv in COMMANDS.items():
        measure(argv)  # warm the file cache and the bytecode
        runs = [measure(argv) for _ in range(args.runs)]
        results[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    base_cpu, base_wall = results["python -c pass"]
    for name, (cpu, wall) in results.items():
        cpu_text = f"cpu {cpu * 1000:7.1f} ms ({cpu / base_cpu:4.1f}x)"
        print(f"{name:40s} {cpu_text}   wall {wall * 1000:7.1f} ms ({wall / base_wall:4.1f}x)")
    print("target: --version and validate within 10x of python -c pass (CPU)")


if __name__ == "__main__":
    main()
