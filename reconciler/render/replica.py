"""All the processes of one replica: its helpers (RPC servers, Ray head and workers), then its main one.

The main process names its helpers' addresses (``--rpc`` servers, ``RAY_ADDRESS``), so they
are rendered first; each gets its port from the planner's allocator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from reconciler.observe import InstanceSpec, Worker
from reconciler.render.instance import render_helper, render_main
from reconciler.schedule import ModelContext, Placement

PortFor = Callable[[str, str], "int | None"]  # (worker, instance id) -> a free port, or None


def render_replica(
    ctx: ModelContext,
    placement: Placement,
    replica: int,
    mhash: str,
    workers: Mapping[str, Worker],
    port_of: PortFor,
) -> list[tuple[str, InstanceSpec]] | None:
    """Every process of one replica: helpers first (the main one names their addresses).

    ``port_of(worker, instance_id)`` gives each process its port (None: none is free; then the
    replica cannot be rendered and None is returned).
    """
    base = f"{ctx.name}-{replica}"
    placed: list[tuple[str, InstanceSpec]] = []
    rpc: list[str] = []
    env: dict[str, str] = {}
    main_worker = workers[placement.worker]
    if placement.subordinates and placement.strategy == "ray":
        head_id = f"{base}-ray-head"
        port = port_of(main_worker.name, head_id)
        if port is None:
            return None
        placed.append(
            (
                main_worker.name,
                render_helper(
                    ctx,
                    "ray-head",
                    main_worker,
                    placement.gpus,
                    placement.claim.model_copy(update={"ram": 0, "vram": {}}),
                    port,
                    head_id,
                    replica,
                    mhash,
                    cache_vram=placement.claim.vram_total,
                ),
            )
        )
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    for index, sub in enumerate(placement.subordinates):
        worker = workers[sub.worker]
        helper_id = f"{base}-{sub.role}-{index}"
        port = port_of(worker.name, helper_id)
        if port is None:
            return None
        head = env.get("RAY_ADDRESS", "").replace("127.0.0.1", main_worker.ip)
        placed.append(
            (
                worker.name,
                render_helper(
                    ctx,
                    sub.role,
                    worker,
                    sub.gpus,
                    sub.claim,
                    port,
                    helper_id,
                    replica,
                    mhash,
                    head,
                    sub.claim.vram_total,
                ),
            )
        )
        rpc.append(f"{worker.ip}:{port}")
    port = port_of(main_worker.name, base)
    if port is None:
        return None
    placed.append((main_worker.name, render_main(ctx, placement, main_worker, port, base, replica, mhash, rpc, env)))
    return placed
