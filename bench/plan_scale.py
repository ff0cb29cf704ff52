"""Plan a synthetic cluster of 1,000 workers x 8 GPUs and 4,000 models (10,000 replicas).

Prints, for 10,000 replicas and for a tenth of them, the full-plan seconds (wall and CPU),
the no-op re-plan seconds (after applying the first plan) and the peak RSS; the ratio of the
two sizes; and the same figures for the unchanged base (``--base``, default main), measured
in a temporary worktree with this same harness. CPU seconds are what to compare on a shared
machine. Targets at 10,000 replicas: full < 1 s, no-op < 50 ms, RSS < 500 MB.

    python bench/plan_scale.py [--replicas 10000] [--workers 1000] [--base main]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler.estimate import ModelMetadata
from reconciler.observe import GIB, GGUFFacts, ObservedInstance, ObservedState, Worker
from reconciler.plan import Facts, Plan, plan
from reconciler.spec import Cluster, Desired, Metadata, Model, WorkerSelector

ZONES = ("a", "b", "c", "d")


def cluster_workers(count: int) -> list[Worker]:
    return [
        Worker.model_validate(
            {
                "name": f"worker-{i:04d}",
                "ip": f"10.{i // 250}.{i % 250}.1",
                "memoryTotal": 1024 * GIB,
                "cpuCount": 64,
                "labels": {"zone": ZONES[i % len(ZONES)]},
                "gpus": [{"index": g, "name": "H100", "memoryTotal": 80 * GIB} for g in range(8)],
            }
        )
        for i in range(count)
    ]


def catalog() -> dict[str, ModelMetadata]:
    entries = {}
    for size in (1, 4, 8, 14, 20, 30):
        source = f"hf:org/model-{size}b"
        entries[source] = ModelMetadata(
            source=source,
            format="safetensors",
            weight_bytes=size * 2 * GIB,
            architectures=["LlamaForCausalLM"],
            attention_heads=32,
            max_position_embeddings=32768,
        )
    facts = GGUFFacts(
        architecture="llama",
        block_count=32,
        embedding_length=4096,
        head_count=32,
        head_count_kv=8,
        key_length=128,
        value_length=128,
        context_length=32768,
        vocab_size=32000,
        layer_bytes=[130_000_000] * 32,
        output_bytes=110_000_000,
        embedding_bytes=75_000_000,
    )
    entries["hf:org/gguf-7b/model.gguf"] = ModelMetadata(
        source="hf:org/gguf-7b/model.gguf", format="gguf", file="model.gguf", weight_bytes=4_350_000_000, gguf=facts
    )
    return entries


def models(count: int) -> list[Model]:
    found = []
    sizes = (1, 4, 8, 14, 20, 30)  # about 5,750 of the 8,000 GPUs
    for i in range(count):
        replicas = 3 if i < count // 2 else 2  # 2,000 models -> 5,000 replicas
        if i % 10 == 0:
            source = {"huggingface": {"repo": "org/gguf-7b", "file": "model.gguf"}}
            backend = "llama-box"
        else:
            source = {"huggingface": {"repo": f"org/model-{sizes[i % len(sizes)]}b"}}
            backend = "vllm"
        found.append(
            Model.model_validate(
                {
                    "apiVersion": "reconciler/v1",
                    "kind": "Model",
                    "metadata": {"name": f"model-{i:04d}"},
                    "spec": {
                        "source": source,
                        "backend": backend,
                        "replicas": replicas,
                        "scheduling": {
                            "workerSelector": f"zone-{ZONES[i % len(ZONES)]}",
                            "placement": "binpack" if i % 3 == 0 else "spread",
                        },
                    },
                }
            )
        )
    return found


def selectors() -> tuple[WorkerSelector, ...]:
    return tuple(
        WorkerSelector.model_validate(
            {
                "apiVersion": "reconciler/v1",
                "kind": "WorkerSelector",
                "metadata": {"name": f"zone-{z}"},
                "spec": {"matchLabels": {"zone": z}},
            }
        )
        for z in ZONES
    )


def applied(result: Plan, observed: ObservedState) -> ObservedState:
    sets = result.desired_sets()
    return ObservedState.of(
        [
            w.model_copy(
                update={
                    "instances": [ObservedInstance(**s.model_dump(), state="Running") for s in sets.get(w.name, [])]
                }
            )
            for w in observed.workers
        ]
    )


def measure(workers: int, model_count: int) -> dict[str, float]:
    """Seconds (wall and CPU) of a full plan and of a no-op re-plan, and the peak RSS."""
    observed = ObservedState.of(cluster_workers(workers))
    cluster = Cluster(metadata=Metadata(name="bench"), spec={"portRange": "40000-40999"})
    desired = Desired(root="bench", cluster=cluster, selectors=selectors(), models=tuple(models(model_count)))
    facts = Facts(catalog())
    gc.collect()  # each timed plan starts without garbage left by building the bench's inputs
    wall, cpu = time.perf_counter(), time.process_time()
    first = plan(desired, observed, {}, facts)
    full_wall, full_cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = applied(first, observed)
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    again = plan(desired, after, {}, facts)
    noop_wall, noop_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "replicas": sum(m.spec.replicas for m in desired.models),
        "full": full_wall,
        "full_cpu": full_cpu,
        "noop": noop_wall,
        "noop_cpu": noop_cpu,
        "creates": first.count("create"),
        "pending": len(first.pending),
        "changes": len(again.changes),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_base(ref: str, workers: int, model_count: int) -> dict[str, float] | None:
    """The same measure on the code of ``ref``, in a temporary worktree and a process of its own."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "base"
        added = subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--detach", str(tree), ref], capture_output=True
        )
        if added.returncode != 0:
            print(f"base {ref}: cannot check it out: {added.stderr.decode().strip()}")
            return None
        try:
            (tree / "bench" / "plan_scale.py").write_text(Path(__file__).read_text())  # this harness, their planner
            env = {**os.environ, "PYTHONPATH": str(tree)}
            argv = [sys.executable, str(tree / "bench" / "plan_scale.py"), "--json"]
            argv += ["--workers", str(workers), "--models", str(model_count)]
            done = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"base {ref}: {done.stderr.strip().splitlines()[-1:]}")
                return None
            found: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
            return found
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], capture_output=True)


def show(label: str, m: dict[str, float]) -> None:
    print(
        f"{label:>5}: {m['replicas']:>6.0f} replicas: full plan {m['full']:.3f} s ({m['full_cpu']:.3f} CPU-s, "
        f"{m['creates']:.0f} creates, {m['pending']:.0f} pending); no-op re-plan {m['noop']:.3f} s "
        f"({m['noop_cpu']:.3f} CPU-s, {m['changes']:.0f} changes); peak RSS {m['rss_mb']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--models", type=int, default=None, help="models (2.5 replicas each); default from --replicas")
    parser.add_argument("--replicas", type=int, default=10000)
    parser.add_argument("--base", default="main", help="git ref of the unchanged base to measure beside ('' skips)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_count = args.models or round(args.replicas / 2.5)
    if args.json:  # one measure, for the base run
        print(json.dumps(measure(args.workers, model_count)))
        return
    small = max(1, model_count // 10)
    print(
        f"cluster: {args.workers} workers x 8 GPUs; targets at 10,000 replicas: full < 1 s, no-op < 50 ms, RSS < 500 MB"
    )
    new, new_small = measure(args.workers, model_count), measure(args.workers, small)
    show("new", new)
    show("new", new_small)
    print(f"  new: 10x the replicas costs {new['full_cpu'] / new_small['full_cpu']:.1f}x the CPU (full plan)")
    if args.base:
        base, base_small = run_base(args.base, args.workers, model_count), run_base(args.base, args.workers, small)
        if base and base_small:
            show("base", base)
            show("base", base_small)
            print(f" base: 10x the replicas costs {base['full_cpu'] / base_small['full_cpu']:.1f}x the CPU (full plan)")
            print(
                f"new vs base: full plan {base['full_cpu'] / new['full_cpu']:.1f}x faster in CPU-s, "
                f"no-op {base['noop_cpu'] / new['noop_cpu']:.1f}x"
            )


if __name__ == "__main__":
    main()
