"""Spread and binpack scores for candidate placements (higher is better), as GPUStack scores them."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.schedule.capacity import Capacity
from reconciler.schedule.placement import Placement


def _inverse(value: float, low: float, high: float) -> float:
    return 1.0 if high == low else 1.0 - (value - low) / (high - low)


def spread_scores(candidates: Sequence[Placement], capacity: Capacity, model: str) -> list[float]:
    """Prefer workers and GPUs with fewer instances of this model, then fewer of any."""
    workers = sorted({c.worker for c in candidates})
    current = {w: capacity.model_count[(w, model)] for w in workers}
    others = {w: capacity.instance_count[w] - current[w] for w in workers}
    cur_low, cur_high = min(current.values()), max(current.values())
    oth_low, oth_high = min(others.values()), max(others.values())
    any_empty = cur_low == 0
    scores = []
    for candidate in candidates:
        w = candidate.worker
        inv_cur = _inverse(current[w], cur_low, cur_high)
        inv_oth = _inverse(others[w], oth_low, oth_high)
        if any_empty:
            worker_score = 0.85 + 0.15 * inv_oth if current[w] == 0 else 0.45 + 0.35 * inv_cur + 0.20 * inv_oth
        else:
            worker_score = 0.50 + 0.25 * inv_cur + 0.15 * inv_oth
        gpu_scores = [
            1.0
            / (
                1.0
                + capacity.gpu_model_count[(w, i, model)]
                + 0.2 * (capacity.gpu_instance_count[(w, i)] - capacity.gpu_model_count[(w, i, model)])
            )
            for i in candidate.gpus
        ]
        gpu_score = sum(gpu_scores) / len(gpu_scores) if gpu_scores else 1.0
        scores.append(100.0 * (0.85 * worker_score + 0.15 * gpu_score))
    return scores


def binpack_scores(candidates: Sequence[Placement], capacity: Capacity) -> list[float]:
    """Prefer the placement that fills its worker or GPUs the most."""
    scores = []
    for candidate in candidates:
        w = candidate.worker
        ram_alloc = max(capacity.ram_allocatable(w), 1)
        if not candidate.gpus:
            scores.append(candidate.claim.ram / ram_alloc * 100)
            continue
        per_gpu = []
        for index in candidate.gpus:
            vram_alloc = max(capacity.vram_allocatable(w, index), 1)
            vram = candidate.claim.vram.get(index, 0)
            per_gpu.append((candidate.claim.ram / ram_alloc * 100 + 2 * vram / vram_alloc * 100) / 3)
        scores.append(max(per_gpu))
    return scores


def best(
    candidates: Sequence[Placement], capacity: Capacity, model: str, placement: str, prefer_worker: str | None = None
) -> Placement:
    """The highest-scoring candidate; ties go to the first worker by name, then the earliest found."""
    if prefer_worker is not None:
        kept = [c for c in candidates if c.worker == prefer_worker]
        if kept:
            candidates = kept
    scores = (
        spread_scores(candidates, capacity, model) if placement == "spread" else binpack_scores(candidates, capacity)
    )
    ranked = sorted(range(len(candidates)), key=lambda i: (-round(scores[i], 9), candidates[i].worker, i))
    return candidates[ranked[0]]


def preferred_gpu(
    options: Sequence[tuple[int, int]], ram: int, capacity: Capacity, worker: str, model: str, placement: str
) -> int:
    """Among one worker's fitting GPUs, given as (index, VRAM claim), the one the scorer ranks first.

    The worker part of a score is the same for all GPUs of a worker, so keeping only
    this GPU per worker ranks candidates exactly as scoring every GPU would.
    """

    ram_alloc = max(capacity.ram_allocatable(worker), 1)
    best_index, best_score = options[0][0], -1.0
    for index, vram in options:
        if placement == "spread":
            mine = capacity.gpu_model_count[(worker, index, model)]
            others = capacity.gpu_instance_count[(worker, index)] - mine
            score = 1.0 / (1.0 + mine + 0.2 * others)
        else:
            score = (ram / ram_alloc * 100 + 2 * vram / max(capacity.vram_allocatable(worker, index), 1) * 100) / 3
        if round(score, 9) > round(best_score, 9):
            best_index, best_score = index, score
    return best_index
