"""Stage 3: observed state. What the agents report, and snapshots of it."""

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
)

__all__ = [
    "GIB",
    "MAX_BLOCKS",
    "MAX_BYTES",
    "MIB",
    "AgentClient",
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
    "ResourceClaim",
    "Worker",
    "load_snapshot",
    "observe_agents",
    "probe_health",
    "put_instances",
]
