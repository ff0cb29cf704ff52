"""Pydantic models of the manifest kinds: Model, WorkerSelector, Cluster, ModelRoute.

Keys are camelCase in YAML and snake_case in Python. Every model forbids unknown
keys and is strict: YAML ``"2"`` is not the integer 2, as in Kubernetes.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

API_VERSION: Final = "reconciler/v1"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# owner/name; neither part may start with "." (a repo becomes folders under the agent's cache dir).
REPO = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*$"
# An absolute path (and query) on the instance's own host: never "//host" or "@host".
HEALTH_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9._~!$&'()*+,;=:%/?-]*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_WHITESPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _refuse(found: re.Match[str] | None) -> None:
    if found is not None:
        raise ValueError(
            f"holds the control character {found.group()!r} at position {found.start()}: "
            "command lines, environments and URLs cannot carry it"
        )


def no_control(value: str) -> str:
    """Strings that reach an argv, an environment, a URL or an HTTP path: no NUL, newline or other control."""
    _refuse(_CONTROL.search(value))
    return value


def _no_control_but_whitespace(value: str) -> str:
    _refuse(_CONTROL_BUT_WHITESPACE.search(value))
    return value


def _on_the_instance(value: str) -> str:
    if not HEALTH_PATH.fullmatch(value):
        raise ValueError(f"{value!r} must be a path on the instance itself, such as /health (no spaces or '//')")
    return value


def _inside_repo(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"{value!r} must be a path inside the repository (no leading '/' or '..')")
    return value


def _http_url(value: str) -> str:
    try:
        urlsplit(value).port  # noqa: B018 - raises on a port outside 0-65535
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a usable URL: {exc}") from exc
    return value


LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

Backend = Literal["auto", "llama-box", "llama-cpp", "vllm", "sglang", "vox-box", "mindie", "custom"]
Category = Literal["llm", "embedding", "reranker", "image", "speech-to-text", "text-to-speech"]
Placement = Literal["spread", "binpack"]

DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=253)]
LabelValue = Annotated[str, StringConstraints(max_length=63), AfterValidator(no_control)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME, max_length=256)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096), AfterValidator(no_control)]
HubFile = Annotated[Text, AfterValidator(_inside_repo)]
HttpUrl = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048),
    AfterValidator(no_control),
    AfterValidator(_http_url),
]
GiB = Annotated[float, Field(ge=0, le=1_048_576)]


class Spec(BaseModel):
    """Base of every manifest model: camelCase aliases, no unknown keys, strict types."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Metadata(Spec):
    name: DnsLabel
    labels: dict[LabelKey, LabelValue] = {}


# --- Model -------------------------------------------------------------------------


class HuggingFaceSource(Spec):
    repo: Annotated[str, StringConstraints(pattern=REPO, max_length=200)]
    file: HubFile | None = None
    revision: Text | None = None


class ModelScopeSource(Spec):
    repo: Annotated[str, StringConstraints(pattern=REPO, max_length=200)]
    file: HubFile | None = None
    revision: Text | None = None


class ModelSource(Spec):
    """Where the weights come from; the loader insists on exactly one field."""

    huggingface: HuggingFaceSource | None = None
    modelscope: ModelScopeSource | None = None
    local_path: Text | None = None

    def kind(self) -> str:
        """The field that is set ("huggingface", "modelscope" or "localPath")."""
        for name, alias in (("huggingface", "huggingface"), ("modelscope", "modelscope"), ("local_path", "localPath")):
            if getattr(self, name) is not None:
                return alias
        return ""

    def is_gguf(self) -> bool:
        """True when the source names one GGUF file."""
        target = (
            self.local_path
            or (self.huggingface and self.huggingface.file)
            or (self.modelscope and self.modelscope.file)
        )
        return bool(target) and str(target).lower().endswith(".gguf")


class ExtendedKVCache(Spec):
    ram_ratio: Annotated[float, Field(gt=0, le=64)] = 1.2
    max_ram_gib: GiB | None = Field(default=None, alias="maxRamGiB")
    chunk_size: Annotated[int, Field(ge=1, le=65536)] = 256


class CustomBackend(Spec):
    # Line breaks and tabs separate arguments like spaces; no other control character.
    command: Annotated[
        str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_no_control_but_whitespace)
    ]
    health_path: Annotated[str, StringConstraints(max_length=1024), AfterValidator(_on_the_instance)] = "/health"


class Routing(Spec):
    """How the router spreads one model's requests over its Running instances."""

    strategy: Literal["least-request", "prefix-hash"] = "least-request"
    # prefix-hash only: characters of the first messages hashed (a shared system prompt).
    prefix_chars: Annotated[int, Field(ge=1, le=1_000_000)] = 2048
    # A request carrying this header sticks to one instance while that instance runs.
    session_header: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]+$", max_length=128)] | None = (
        "X-Session-Id"
    )


class Scheduling(Spec):
    mode: Literal["auto", "manual"] = "auto"
    placement: Placement | None = None
    worker_selector: DnsLabel | None = None
    match_labels: dict[LabelKey, LabelValue] = {}
    gpu_selector: list[Text] = []
    gpus_per_replica: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] = "auto"


ParameterText = Annotated[str, StringConstraints(max_length=4096), AfterValidator(no_control)]
BackendParameter = ParameterText | list[ParameterText]


class ModelSpec(Spec):
    source: ModelSource
    backend: Backend = "auto"
    backend_version: Text | None = None
    replicas: Annotated[int, Field(ge=0, le=1024)] = 1
    # A rollout: new replicas beyond `replicas` at once, and replicas that may be down at once.
    max_surge: Annotated[int, Field(ge=0, le=1024)] = 1
    max_unavailable: Annotated[int, Field(ge=0, le=1024)] = 0
    category: Category | None = None
    scheduling: Scheduling = Scheduling()
    backend_parameters: list[BackendParameter] = []
    env: dict[EnvName, Annotated[str, StringConstraints(max_length=32768), AfterValidator(no_control)]] = {}
    cpu_offloading: bool | None = None
    distributed_inference: bool | None = None
    restart_on_error: bool = True
    generic_proxy: bool = False
    # Seconds the requests in flight on a leaving instance may take before it is stopped.
    drain_seconds: Annotated[int, Field(ge=0, le=3600)] = 30
    extended_kv_cache: ExtendedKVCache | None = Field(default=None, alias="extendedKVCache")
    custom: CustomBackend | None = None
    routing: Routing = Routing()


class Model(Spec):
    api_version: Literal["reconciler/v1"] = API_VERSION
    kind: Literal["Model"] = "Model"
    metadata: Metadata
    spec: ModelSpec


# --- WorkerSelector ----------------------------------------------------------------


class MatchExpression(Spec):
    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = []


class WorkerSelectorSpec(Spec):
    match_labels: dict[LabelKey, LabelValue] = {}
    match_expressions: list[MatchExpression] = []


class WorkerSelector(Spec):
    api_version: Literal["reconciler/v1"] = API_VERSION
    kind: Literal["WorkerSelector"] = "WorkerSelector"
    metadata: Metadata
    spec: WorkerSelectorSpec = WorkerSelectorSpec()


# --- Cluster -----------------------------------------------------------------------


class Reserved(Spec):
    ram_gib: GiB = Field(default=2.0, alias="ramGiB")
    vram_gib: GiB = Field(default=1.0, alias="vramGiB")


class AgentReserved(Spec):
    """One worker's reservation; a field left out keeps the cluster's."""

    ram_gib: GiB | None = Field(default=None, alias="ramGiB")
    vram_gib: GiB | None = Field(default=None, alias="vramGiB")


class Agent(Spec):
    name: DnsLabel
    url: HttpUrl
    labels: dict[LabelKey, LabelValue] = {}
    reserved: AgentReserved | None = None

    def reserved_bytes(self) -> tuple[int | None, int | None]:
        """(RAM, VRAM per GPU) this worker keeps back, in bytes; None where the cluster's applies."""
        ram = self.reserved.ram_gib if self.reserved else None
        vram = self.reserved.vram_gib if self.reserved else None
        return (None if ram is None else int(ram * 1024**3), None if vram is None else int(vram * 1024**3))


class Defaults(Spec):
    context_size: Annotated[int, Field(ge=1, le=16_777_216)] = 8192
    parallel: Annotated[int, Field(ge=1, le=4096)] = 4
    placement: Placement = "spread"


class Reschedule(Spec):
    grace_period_seconds: Annotated[int, Field(ge=0, le=31_536_000)] = 300


DURATION = re.compile(r"^(\d{1,9})(ms|s|m|h)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MIN_INTERVAL, MAX_INTERVAL = 1.0, 86400.0


def duration_seconds(value: str) -> float:
    match = DURATION.match(value)
    assert match is not None  # the field pattern guarantees it
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def _sync_interval(value: str) -> str:
    if not MIN_INTERVAL <= duration_seconds(value) <= MAX_INTERVAL:
        raise ValueError(f"{value!r} must be between 1s and 24h")
    return value


class Sync(Spec):
    interval: Annotated[
        str, StringConstraints(pattern=DURATION.pattern, max_length=16), AfterValidator(_sync_interval)
    ] = "30s"
    prune: bool = True
    allow_empty: bool = False

    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)


class HuggingFaceSettings(Spec):
    endpoint: HttpUrl | None = None


class ApiKey(Spec):
    name: DnsLabel
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class RouterSettings(Spec):
    api_keys: list[ApiKey] = []


class ClusterSpec(Spec):
    agents: list[Agent] = []
    reserved: Reserved = Reserved()
    port_range: Annotated[str, StringConstraints(pattern=r"^\d{1,5}-\d{1,5}$")] = "40000-40063"
    defaults: Defaults = Defaults()
    reschedule: Reschedule = Reschedule()
    sync: Sync = Sync()
    huggingface: HuggingFaceSettings = HuggingFaceSettings()
    router: RouterSettings = RouterSettings()

    @field_validator("port_range")
    @classmethod
    def _ordered_ports(cls, value: str) -> str:
        low, high = (int(part) for part in value.split("-"))
        if not 1 <= low <= high <= 65535:
            raise ValueError("must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535")
        return value

    def ports(self) -> range:
        low, high = (int(part) for part in self.port_range.split("-"))
        return range(low, high + 1)


class Cluster(Spec):
    api_version: Literal["reconciler/v1"] = API_VERSION
    kind: Literal["Cluster"] = "Cluster"
    metadata: Metadata
    spec: ClusterSpec = ClusterSpec()


# --- ModelRoute --------------------------------------------------------------------


class RouteTarget(Spec):
    model: DnsLabel
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1


class ModelRouteSpec(Spec):
    """A name clients use: weighted targets, then an ordered fallback tried when none can serve."""

    targets: Annotated[list[RouteTarget], Field(min_length=1, max_length=64)]
    fallback: Annotated[list[DnsLabel], Field(max_length=64)] = []


class ModelRoute(Spec):
    api_version: Literal["reconciler/v1"] = API_VERSION
    kind: Literal["ModelRoute"] = "ModelRoute"
    metadata: Metadata
    spec: ModelRouteSpec


Resource = Model | WorkerSelector | Cluster | ModelRoute
KINDS: dict[str, type[Model] | type[WorkerSelector] | type[Cluster] | type[ModelRoute]] = {
    "Model": Model,
    "WorkerSelector": WorkerSelector,
    "Cluster": Cluster,
    "ModelRoute": ModelRoute,
}
