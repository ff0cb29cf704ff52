"""What the agents report: workers, their GPUs, running instances, backends and files.

This is the body of an agent's ``GET /v1/state`` and, as a list, a snapshot file.
Sizes are bytes; snapshot files may also write them as ``"24 GiB"`` or ``"512MiB"``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GIB = 1024**3
MIB = 1024**2
_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1024,
    "mib": MIB,
    "gib": GIB,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


MAX_BYTES = 2**63 - 1
# No model has more layers; the scheduler tries every split of them, so the count is bounded.
MAX_BLOCKS = 1024


def _bytes(value: object) -> object:
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"{value!r} is not a size such as 24GiB, 512 MiB or 1073741824")
        size = float(match.group(1)) * _UNITS[match.group(2).lower()]
        if not size <= MAX_BYTES:  # also false for the infinity a 400-digit number becomes
            raise ValueError(f"{value!r} is larger than {MAX_BYTES} bytes")
        return int(size)
    return value


ByteSize = Annotated[int, BeforeValidator(_bytes), Field(ge=0, le=MAX_BYTES)]


def _claimed_bytes(value: object) -> object:
    # A claim computed from huge (but each valid) facts may pass 2^63: it fits nowhere
    # either way, so it saturates and the model stays Pending with its size named.
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_BYTES:
        return MAX_BYTES
    return _bytes(value)


ClaimBytes = Annotated[int, BeforeValidator(_claimed_bytes), Field(ge=0, le=MAX_BYTES)]
Count = Annotated[int, Field(ge=0, le=MAX_BYTES)]
InstanceStatus = Literal[
    "Pending", "Scheduled", "Downloading", "Starting", "Running", "Error", "Unreachable", "Stopped", "Draining"
]
HelperRole = Literal["rpc-server", "ray-head", "ray-worker"]
WorkerStatus = Literal["Ready", "NotReady", "Unreachable"]


def port_span(text: str) -> range:
    """The ports of ``LOW-HIGH`` (both included); ValueError unless 1 <= LOW <= HIGH <= 65535."""
    low, high = (int(part) for part in text.split("-"))
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r}: must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
    return range(low, high + 1)


def _port_range(text: str) -> str:
    port_span(text)
    return text


PortRange = Annotated[str, StringConstraints(pattern=r"^\d{1,5}-\d{1,5}$"), AfterValidator(_port_range)]


class Observed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class GPUDevice(Observed):
    index: Annotated[int, Field(ge=0)]
    name: str = ""
    vendor: str = "nvidia"
    uuid: str = ""
    memory_total: ByteSize
    memory_used: ByteSize = 0
    unified_memory: bool = False
    utilization: float | None = None
    temperature: float | None = None


class ResourceClaim(Observed):
    """Memory an instance holds: RAM, and VRAM per GPU index of its worker."""

    ram: ClaimBytes = 0
    vram: dict[int, ClaimBytes] = {}

    @property
    def vram_total(self) -> int:
        return sum(self.vram.values())


class ModelFileRef(Observed):
    """Where an instance's weights come from and where they lie on the worker."""

    source: str
    path: str
    repo: str = ""
    file: str = ""
    revision: str = ""


class InstanceSpec(Observed):
    """One process an agent must run: the wire format of ``PUT /v1/instances``.

    ``spec_hash`` covers everything but the claim; ``model_hash`` covers the inputs
    that shaped the instance, so the planner can tell "unchanged" without re-rendering.
    """

    id: str
    model: str
    replica: int = 0
    role: Literal["main", "rpc-server", "ray-head", "ray-worker"] = "main"
    backend: str
    argv: list[str]
    env: dict[str, str] = {}
    port: int
    health_path: str = "/v1/models"
    gpus: list[int] = []
    claim: ResourceClaim = ResourceClaim()
    files: list[ModelFileRef] = []
    restart_on_error: bool = True
    drain_seconds: int = Field(default=30, ge=0, le=3600)  # not in spec_hash: changing it restarts nothing
    model_hash: str = ""
    spec_hash: str = ""


class ObservedInstance(InstanceSpec):
    """An instance as its agent reports it.

    A snapshot written by hand may give only ``id``, ``model`` and ``claim`` (and
    ``replica``, ``gpus``): agents always send the rest.
    """

    backend: str = ""
    argv: list[str] = []
    port: int = 0
    state: InstanceStatus = "Running"
    pid: int | None = None
    message: str = ""
    restarts: int = 0
    exit_code: int | None = None
    progress: float | None = None  # download progress, 0..1, while Downloading
    measured_ram: ByteSize | None = None  # RSS of the process tree; None while no process runs
    measured_vram: dict[int, ByteSize] = {}  # per GPU index, from NVML's per-process usage

    def spec(self) -> InstanceSpec:
        """The instance as it was handed to the agent, without its status."""
        return InstanceSpec.model_validate(self.model_dump(include=set(InstanceSpec.model_fields)))


class InstalledBackend(Observed):
    name: str
    version: str = ""
    path: str = ""


class GGUFFacts(Observed):
    """Header facts of a GGUF file, as the agent that holds it read them.

    ``layerBytes`` may be one number in recorded files: every layer the same size.
    """

    @model_validator(mode="before")
    @classmethod
    def _uniform_layers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            size = data.get("layerBytes", data.get("layer_bytes"))
            layers = data.get("blockCount", data.get("block_count"))
            if isinstance(size, int) and isinstance(layers, int) and 0 <= layers <= MAX_BLOCKS:
                data = {**data, "layerBytes": [size] * layers}
                data.pop("layer_bytes", None)
        return data

    architecture: str
    block_count: Annotated[int, Field(ge=0, le=MAX_BLOCKS)]
    embedding_length: Count
    head_count: Count
    head_count_kv: Count
    key_length: Count
    value_length: Count
    context_length: Count
    vocab_size: Count = 0
    sliding_window: Count = 0
    has_chat_template: bool = False
    layer_bytes: Annotated[list[ByteSize], Field(max_length=MAX_BLOCKS)] = []
    output_bytes: ByteSize = 0
    embedding_bytes: ByteSize = 0
    other_bytes: ByteSize = 0

    @model_validator(mode="after")
    def _one_file(self) -> GGUFFacts:
        total = sum(self.layer_bytes) + self.output_bytes + self.embedding_bytes + self.other_bytes
        if total > MAX_BYTES:
            raise ValueError(f"the tensors add up to {total} bytes, more than one file can hold ({MAX_BYTES})")
        return self


class ModelFile(Observed):
    path: str
    size: ByteSize = 0
    source: str = ""
    gguf: GGUFFacts | None = None


class Worker(Observed):
    # Printed in plans, one line per action: never empty, never a line break.
    name: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[^\x00-\x1f\x7f]+$")]
    url: str = ""
    ip: str = "127.0.0.1"
    state: WorkerStatus = "Ready"
    os: str = "linux"
    arch: str = "x86_64"
    labels: dict[str, str] = {}
    cpu_count: int = 1
    memory_total: ByteSize
    memory_used: ByteSize = 0
    gpus: list[GPUDevice] = []
    instances: list[ObservedInstance] = []
    backends: list[InstalledBackend] = []
    files: list[ModelFile] = []
    ports_in_use: list[int] = []
    # The agent's --port-range: its instances' ports (None: the Cluster's portRange).
    port_range: PortRange | None = None
    # Who holds a port one of this worker's instances wants: "pid N (name)", from the agent.
    port_holders: dict[int, str] = {}
    not_ready_seconds: float = 0.0
    data_dir: str = "/var/lib/reconciler"
    cache_dir: str = "/var/lib/reconciler/cache"

    def builtin_labels(self) -> dict[str, str]:
        labels = {"os": self.os, "arch": self.arch, "worker-name": self.name, "gpu.count": str(len(self.gpus))}
        if self.gpus:
            labels["gpu.vendor"] = self.gpus[0].vendor
        return labels

    def all_labels(self) -> dict[str, str]:
        return {**self.builtin_labels(), **self.labels}

    def backend(self, name: str) -> InstalledBackend | None:
        return next((b for b in self.backends if b.name == name), None)

    def file(self, path: str) -> ModelFile | None:
        return next((f for f in self.files if f.path == path), None)
