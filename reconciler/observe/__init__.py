"""Stage 3: observed state. What the agents report, and snapshots of it."""

from reconciler.observe.apply import Applied, Put, Sets, apply_sets, instances_key
from reconciler.observe.client import ApplyResult, observe_agents, probe_health, put_instances, tls
from reconciler.observe.snapshot import ObservedState, load_snapshot
from reconciler.observe.state import (
    GIB,
    MAX_BLOCKS,
    MAX_BYTES,
    MIB,
    GGUFFacts,
    GPUDevice,
    HelperRole,
    InstalledBackend,
    InstanceSpec,
    ModelFile,
    ModelFileRef,
    ObservedInstance,
    ResourceClaim,
    Worker,
    port_span,
)

__all__ = [
    "GIB",
    "MAX_BLOCKS",
    "MAX_BYTES",
    "MIB",
    "Applied",
    "ApplyResult",
    "GGUFFacts",
    "GPUDevice",
    "HelperRole",
    "InstalledBackend",
    "InstanceSpec",
    "ModelFile",
    "ModelFileRef",
    "ObservedInstance",
    "ObservedState",
    "Put",
    "ResourceClaim",
    "Sets",
    "Worker",
    "apply_sets",
    "instances_key",
    "load_snapshot",
    "observe_agents",
    "port_span",
    "probe_health",
    "put_instances",
    "tls",
]
