"""Time `validate` on the worst files the loader's limits still let in, or refuse last.

Prints wall and CPU seconds per file (CPU time is what a busy machine hides) and the
peak RSS. Target (issue 9): every one under 10 s on a 2-core
machine, memory bounded by the file-size and node caps.

    python bench/hostile_input.py
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from reconciler.spec import validate_paths
from reconciler.spec.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES


def alias_bomb(width: int, levels: int) -> str:
    lines = ["b0: &b0 [x]"]
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def flow_nest(depth: int) -> str:
    unit = "- " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"
    return unit * (MAX_NODES // depth)


def cases() -> dict[str, str]:
    flat = "- {a: 1, b: [1, 2, 3]}\n"
    return {
        "alias bomb 9^8 (refused)": alias_bomb(9, 8),
        "self-reference (refused)": "a: &a [*a]\n",
        "2,000 nested [ (refused)": "[" * 2000 + "]" * 2000,
        f"flow lists {MAX_DEPTH - 1} deep up to the node cap": flow_nest(MAX_DEPTH),
        "flat list up to the node cap": flat * (MAX_NODES // 7),
        "1 MiB of one long string": "a: " + "x" * (MAX_FILE_BYTES - 10) + "\n",
        "1 MiB + 1 byte (refused before parsing)": "#" * (MAX_FILE_BYTES + 1),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in cases().items():
            path = Path(tmp) / "case.yaml"
            path.write_text(text, encoding="utf-8")
            start, cpu = time.perf_counter(), time.process_time()
            report = validate_paths([path])
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            first = report.diagnostics[0].message[:50] if report.diagnostics else "valid"
            print(f"{name:46} {len(text.encode()):>8} bytes {seconds:6.2f} s wall {cpu:6.2f} s CPU  {first}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
