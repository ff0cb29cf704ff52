"""Measured memory beside the claim: what status shows, and instances that outgrow their claim.

The agent measures each instance's RSS (its process tree) and VRAM (NVML, per GPU). An
instance above its claim by more than 10% means the estimate is wrong for it, and the
scheduler may be packing other instances into memory that is not free: one event when it
crosses the line, and a gauge while it stays above.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from reconciler.observe import ObservedInstance, ObservedState

OVER_CLAIM_RATIO = 1.10
GIB = 1024**3


def measured_of(instance: ObservedInstance) -> dict[str, Any] | None:
    """``{ram, vram: {gpu: bytes}}`` as the agent measured it; None while no process runs."""
    if instance.measured_ram is None and not instance.measured_vram:
        return None
    return {"ram": instance.measured_ram, "vram": {str(k): v for k, v in sorted(instance.measured_vram.items())}}


def over_claim(instance: ObservedInstance) -> str | None:
    """Why the instance is above its claim by more than 10%, or None."""
    found = []
    claim, ram = instance.claim, instance.measured_ram
    if ram is not None and claim.ram and ram > claim.ram * OVER_CLAIM_RATIO:
        found.append(
            f"RAM {ram / GIB:.2f} GiB measured, {ram / claim.ram - 1:.0%} above its claim of {claim.ram / GIB:.2f} GiB"
        )
    vram = sum(instance.measured_vram.values())
    if vram and claim.vram_total and vram > claim.vram_total * OVER_CLAIM_RATIO:
        found.append(
            f"VRAM {vram / GIB:.2f} GiB measured, {vram / claim.vram_total - 1:.0%} above its claim of "
            f"{claim.vram_total / GIB:.2f} GiB"
        )
    return "; ".join(found) or None


class OverClaimWatch:
    """Remembers which instances are over their claim, so each crossing is told once."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.over: set[str] = set()
        self.gauge = Gauge(
            "reconciler_instances_over_claim",
            "Instances whose measured memory is more than 10% above their claim.",
            registry=registry,
        )

    def update(self, observed: ObservedState) -> list[tuple[str, str]]:
        """The instances that crossed above their claim since the last call, with why."""
        now = {i.id: why for w in observed.workers for i in w.instances if (why := over_claim(i))}
        crossed = [(instance_id, why) for instance_id, why in sorted(now.items()) if instance_id not in self.over]
        self.over = set(now)
        self.gauge.set(len(now))
        return crossed
