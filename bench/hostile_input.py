"""Time `validate` and `plan` on the worst inputs the loader's limits still let in, or refuse last.

Each case runs in a fresh process (so one case's heap does not flatter the next) and prints
wall and CPU seconds (CPU time is what a busy machine hides) and that process's peak RSS.
Target (issue 16 item 11): every case under 10 s and 500 MB on a 2-core machine.

    python bench/hostile_input.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.spec.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MAX_TOTAL_NODES

ROOT = Path(__file__).resolve().parent.parent
FLAT = "- {a: 1, b: [1, 2, 3]}\n"  # 8 values: keys count
MODEL = "apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: m}\nspec:\n  source: {localPath: /m.gguf}\n"


def alias_bomb(width: int, levels: int) -> str:
    lines = ["b0: &b0 [x]"]
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def flow_nest(depth: int) -> str:
    unit = "- " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"
    return unit * (MAX_NODES // depth - 1)


def snapshot_at_the_cap() -> str:
    """Workers with 8 GPUs each, as many as the node cap admits (JSON, as `observe` writes)."""
    gpu = {"index": 0, "name": "H100", "memoryTotal": 85899345920, "memoryUsed": 0}
    worker = {"name": "w", "memoryTotal": 1099511627776, "cpuCount": 64, "gpus": [gpu] * 8}
    per_worker = 9 + 8 * 9  # keys count as values too
    workers = [
        {**worker, "name": f"w{i}", "gpus": [{**gpu, "index": g} for g in range(8)]}
        for i in range(MAX_NODES // per_worker - 1)
    ]
    return json.dumps(workers)


def gguf_at_the_header_cap(path: Path) -> None:
    """A GGUF whose vocabulary fills its header up to the reader's 64 MiB cap."""
    import gguf

    from reconciler.estimate.gguf import MAX_HEADER_BYTES

    writer = gguf.GGUFWriter(path, "llama")
    for key, value in (("block_count", 2), ("embedding_length", 64), ("context_length", 2048)):
        writer.add_uint64(f"llama.{key}", value)
    for key, value in (("attention.head_count", 4), ("attention.head_count_kv", 4)):
        writer.add_uint64(f"llama.{key}", value)
    token = "x" * 24
    writer.add_token_list([token] * ((MAX_HEADER_BYTES - 4096) // (8 + len(token))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


def validate_cases() -> dict[str, Callable[[Path], list[Path]]]:
    def one(text: str) -> Callable[[Path], list[Path]]:
        def write(folder: Path) -> list[Path]:
            path = folder / "case.yaml"
            path.write_text(text, encoding="utf-8")
            return [path]

        return write

    def many(folder: Path) -> list[Path]:
        files = MAX_TOTAL_NODES // MAX_NODES + 1
        for index in range(files):
            (folder / f"f{index}.yaml").write_text(FLAT * (MAX_NODES // 8 - 1), encoding="utf-8")
        return [folder]

    return {
        "alias bomb 9^8 (refused)": one(alias_bomb(9, 8)),
        "self-reference (refused)": one("a: &a [*a]\n"),
        "2,000 nested [ (refused)": one("[" * 2000 + "]" * 2000),
        f"flow lists {MAX_DEPTH - 1} deep up to the node cap": one(flow_nest(MAX_DEPTH)),
        "flat list up to the node cap": one(FLAT * (MAX_NODES // 8 - 1)),
        "empty documents past the cap (refused)": one("---\n" * (MAX_FILE_BYTES // 4 - 1)),
        "1 MiB of one long string": one("a: " + "x" * (MAX_FILE_BYTES - 10) + "\n"),
        "1 MiB of one comment": one("# " + "x" * (MAX_FILE_BYTES - 100) + "\n" + MODEL),
        "1 MiB + 1 byte (refused before parsing)": one("#" * (MAX_FILE_BYTES + 1)),
        "files past the total cap (refused)": many,
    }


def run_case(kind: str, name: str) -> None:
    """In the child: build the input, run it, print one JSON line."""
    from reconciler.spec import validate_paths

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start, cpu = time.perf_counter(), time.process_time()
        if kind == "validate":
            paths = validate_cases()[name](folder)
            start, cpu = time.perf_counter(), time.process_time()
            report = validate_paths(paths)
            outcome = report.diagnostics[0].message[:50] if report.diagnostics else "valid"
        elif kind == "plan":
            (folder / "snapshot.json").write_text(snapshot_at_the_cap(), encoding="utf-8")
            start, cpu = time.perf_counter(), time.process_time()
            outcome = _plan(folder / "snapshot.json")
        else:
            # Written by another process, so its own memory is not counted here.
            subprocess.run([sys.executable, __file__, "--gguf", str(folder / "m.gguf")], check=True)
            start, cpu = time.perf_counter(), time.process_time()
            outcome = _plan_gguf(folder)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": seconds, "cpu": cpu, "peak": peak, "outcome": outcome}))


def _plan(snapshot: Path) -> str:
    from reconciler.estimate import load_catalog
    from reconciler.observe import load_snapshot
    from reconciler.plan import Facts, plan
    from reconciler.spec import load_desired

    desired = load_desired(ROOT / "examples" / "multi-gpu-vllm")
    state = load_snapshot(snapshot)
    result = plan(desired, state, {}, Facts(load_catalog(ROOT / "examples" / "snapshots" / "catalog.yaml")))
    return f"{len(state.workers)} workers, {len(result.actions)} actions, {len(result.pending)} pending"


def _plan_gguf(folder: Path) -> str:
    from typer.testing import CliRunner

    from reconciler.cli import app

    manifests = folder / "manifests"
    manifests.mkdir()
    (manifests / "m.yaml").write_text(MODEL.replace("/m.gguf", str(folder / "m.gguf")), encoding="utf-8")
    snapshot = ROOT / "examples" / "snapshots" / "cpu-only.yaml"
    result = CliRunner().invoke(app, ["plan", str(manifests), "--observed", str(snapshot)])
    last = (result.stdout or result.stderr).strip().splitlines()
    return f"exit {result.exit_code}: {last[-1][:60] if last else ''}"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--case":
        run_case(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--gguf":
        gguf_at_the_header_cap(Path(sys.argv[2]))
        return
    cases = [("validate", name) for name in validate_cases()]
    cases.append(("plan", f"snapshot of {MAX_NODES} values (plan, multi-gpu-vllm)"))
    cases.append(("plan-gguf", "local GGUF header at the 64 MiB cap (plan)"))
    for kind, name in cases:
        done = subprocess.run(
            [sys.executable, __file__, "--case", kind, name], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(f"{name:48} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{name:48} {figures['wall']:6.2f} s wall {figures['cpu']:6.2f} s CPU {figures['peak']:5.0f} MB peak"
            f"  {figures['outcome']}"
        )


if __name__ == "__main__":
    main()
