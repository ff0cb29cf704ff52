"""Stage 3: observed state. What the agents report, and snapshots of it."""

from reconciler.observe.apply import Applied, Put, apply_sets, instances_key
from reconciler.observe.client import (
    AgentClient,
    ApplyResult,
    HttpAgentClient,
    observe_agents,
    probe_health,
    put_instances,
)
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
    "AgentClient",
    "Applied",
    "ApplyResult",
    "GGUFFacts",
    "GPUDevice",
    "HelperRole",
    "HttpAgentClient",
    "InstalledBackend",
    "InstanceSpec",
    "ModelFile",
    "ModelFileRef",
    "ObservedInstance",
    "ObservedState",
    "Put",
    "ResourceClaim",
    "Worker",
    "apply_sets",
    "instances_key",
    "load_snapshot",
    "observe_agents",
    "port_span",
    "probe_health",
    "put_instances",
]
