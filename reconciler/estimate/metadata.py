"""Facts about a model's files, read once at the edge and handed to the pure planner.

Where they come from, first match wins: a recorded catalog (``--catalog``), the
on-disk cache, an agent's report of a file it holds, the local file system, the hub
(Hugging Face or a mirror via ``HF_ENDPOINT`` / the Cluster's endpoint) or ModelScope.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import httpx2  # huggingface_hub's HTTP client; its errors are translated here
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from reconciler.errors import Diagnostic, SourceUnavailable, SpecInvalid
from reconciler.estimate.gguf import ByteSource, FileSource, GGUFError, HttpRangeSource, pick_mmproj, read_facts
from reconciler.observe import GGUFFacts, ObservedState
from reconciler.spec import Model, ModelSource
from reconciler.spec.loader import plain, read_file, read_yaml_file

_T = TypeVar("_T")
MODELSCOPE = "https://modelscope.cn"
SPLIT_GGUF = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
SPEECH_TYPES = {"whisper": "speech-to-text", "cosyvoice": "text-to-speech", "bark": "text-to-speech"}


class ModelMetadata(BaseModel):
    """What the estimate needs to know about one model source."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    source: str
    format: Literal["gguf", "safetensors", "other"]
    file: str = ""
    weight_bytes: int
    gguf: GGUFFacts | None = None
    architectures: list[str] = []
    model_type: str = ""
    attention_heads: int = 0
    max_position_embeddings: int = 0
    parameter_count: int = 0
    dtype: str = ""
    mmproj: str | None = None

    def category(self) -> str:
        """The model's category as GPUStack would detect it."""
        names = " ".join(self.architectures).lower()
        if self.model_type in SPEECH_TYPES:
            return SPEECH_TYPES[self.model_type]
        for word in ("cosyvoice", "fishspeech", "bark"):
            if word in self.source.lower():
                return "text-to-speech"
        if "whisper" in self.source.lower():
            return "speech-to-text"
        if "sequenceclassification" in names or "reranker" in self.source.lower():
            return "reranker"
        if re.search(r"(bert|roberta|embedding|e5|bge|gte)model", names) or "embed" in self.source.lower():
            return "embedding"
        if "diffusion" in names or "flux" in self.model_type:
            return "image"
        return "llm"


Catalog = Mapping[str, ModelMetadata]
_ENTRIES = TypeAdapter(list[ModelMetadata])


def source_key(source: ModelSource) -> str:
    """A stable key for a model source: ``hf:org/name[/file][@rev]``, ``ms:...`` or ``local:/path``."""
    if source.local_path is not None:
        return f"local:{source.local_path}"
    hub = source.huggingface or source.modelscope
    assert hub is not None  # the spec rules guarantee one source
    prefix = "hf" if source.huggingface else "ms"
    key = f"{prefix}:{hub.repo}"
    if hub.file:
        key += f"/{hub.file}"
    if hub.revision:
        key += f"@{hub.revision}"
    return key


def load_catalog(path: str | Path) -> dict[str, ModelMetadata]:
    """A recorded catalog: a YAML/JSON list of metadata entries (the cache file is one too)."""
    name = str(path)
    documents = read_yaml_file(path, "catalog")
    scalars = [d for d in documents if not isinstance(d.node, list)]
    if scalars:
        raise SpecInvalid(
            [
                Diagnostic(name, d.line, d.col, "catalog", None, "a catalog is a YAML/JSON list of entries")
                for d in scalars
            ]
        )
    data = [entry for d in documents for entry in plain(d.node)]
    try:
        entries = _ENTRIES.validate_python(data)
    except ValidationError as exc:
        first = documents[0] if documents else None
        diagnostics = []
        for error in exc.errors():
            line, col, field = first.position(error["loc"]) if first else (1, 1, "")
            diagnostics.append(Diagnostic(name, line, col, "catalog", field or None, error["msg"]))
        raise SpecInvalid(diagnostics) from exc
    return {entry.source: entry for entry in entries}


def save_catalog(path: Path, catalog: Catalog) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [m.model_dump(by_alias=True, mode="json", exclude_defaults=True) for _, m in sorted(catalog.items())]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
    tmp.replace(path)


# --- readers -----------------------------------------------------------------------


def _gguf_metadata(key: str, file: str, facts: GGUFFacts, size: int, mmproj: str | None = None) -> ModelMetadata:
    weights = sum(facts.layer_bytes) + facts.output_bytes + facts.embedding_bytes + facts.other_bytes
    return ModelMetadata(
        source=key,
        format="gguf",
        file=file,
        weight_bytes=weights or size,
        gguf=facts,
        architectures=[facts.architecture],
        attention_heads=facts.head_count,
        max_position_embeddings=facts.context_length,
        mmproj=mmproj,
    )


# A safetensors header is JSON of at most 100 MB (the format's own limit).
MAX_SAFETENSORS_HEADER = 100_000_000


def _json(data: bytes | str, where: str) -> Any:
    """Parsed JSON, or SourceUnavailable naming ``where:line:col``."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise SourceUnavailable(f"{where}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc
    except (UnicodeDecodeError, RecursionError) as exc:
        raise SourceUnavailable(f"{where}: not valid JSON: {type(exc).__name__}") from exc


def _count(value: Any) -> int:
    """A non-negative integer from a config value; anything else counts as unknown (0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else 0


def _config_fields(config: Any, where: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise SourceUnavailable(f"{where}: config.json must hold a JSON object")
    nested = config.get("text_config")
    text = nested if isinstance(nested, dict) else config
    architectures = config.get("architectures")
    return {
        "architectures": [a for a in architectures if isinstance(a, str)] if isinstance(architectures, list) else [],
        "model_type": str(config.get("model_type") or ""),
        "attention_heads": _count(text.get("num_attention_heads") or text.get("n_head")),
        "max_position_embeddings": _count(text.get("max_position_embeddings") or text.get("n_positions")),
        "dtype": str(config.get("torch_dtype") or config.get("dtype") or ""),
    }


def _safetensors_parameters(source: ByteSource, where: str) -> int:
    """Parameters counted from one safetensors header: 8 bytes of length, then JSON."""
    head = source.read(0, 8)
    if len(head) != 8:
        raise SourceUnavailable(f"{where}: not a safetensors file (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_SAFETENSORS_HEADER:
        raise SourceUnavailable(f"{where}: safetensors header of {length} bytes (the limit is 100 MB)")
    body = source.read(8, length)
    if len(body) != length:
        raise SourceUnavailable(f"{where}: file ends inside the safetensors header")
    header = _json(body, where)
    if not isinstance(header, dict):
        raise SourceUnavailable(f"{where}: the safetensors header is not a JSON object")
    count = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        shape = tensor.get("shape") if isinstance(tensor, dict) else None
        if not isinstance(shape, list) or not all(_count(dim) == dim for dim in shape):
            raise SourceUnavailable(f"{where}: tensor {name!r} has no valid shape")
        count += math.prod(shape)
    return count


def read_local(key: str, path: Path) -> ModelMetadata:
    """A GGUF file or a folder with config.json and *.safetensors on this machine."""
    if path.is_file():
        try:
            facts = read_facts(FileSource(path))
        except GGUFError as exc:
            raise SourceUnavailable(f"{path}: {exc}") from exc
        siblings = [p.name for p in path.parent.glob("*.gguf")]
        return _gguf_metadata(key, path.name, facts, path.stat().st_size, pick_mmproj(siblings))
    config_path = path / "config.json"
    if not config_path.is_file():
        raise SourceUnavailable(f"{path} is neither a GGUF file nor a folder with config.json")
    config = _config_fields(_json(_read_small(config_path), str(config_path)), str(config_path))
    weights = sorted(path.glob("*.safetensors"))
    parameters = sum(_safetensors_parameters(FileSource(file), str(file)) for file in weights)
    size = sum(f.stat().st_size for f in weights) or sum(f.stat().st_size for f in path.glob("*.bin"))
    return ModelMetadata(source=key, format="safetensors", weight_bytes=size, parameter_count=parameters, **config)


def _read_small(path: Path) -> bytes:
    """A config file, refused past the manifest size limit rather than read whole."""
    raw = read_file(path, "config")
    if isinstance(raw, Diagnostic):
        raise SourceUnavailable(str(raw))
    return raw


class HubClient(ABC):
    """A model hub: file lists, small files, and header ranges of large ones."""

    def __init__(self, endpoint: str, client: httpx.Client, token: str | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    @abstractmethod
    def files(self, repo: str, revision: str) -> dict[str, int]:
        """File name -> size for every file of the repo."""

    @abstractmethod
    def url(self, repo: str, revision: str, file: str) -> str:
        """Where one file of the repo is downloaded from."""

    def source(self, repo: str, revision: str, file: str) -> HttpRangeSource:
        return HttpRangeSource(self.url(repo, revision, file), self.client, headers=self.headers)

    def parameters(self, repo: str, revision: str, weights: Sequence[str]) -> int:
        """Parameters counted from each safetensors file's header (a range request each)."""
        return sum(_safetensors_parameters(self.source(repo, revision, name), f"{repo}/{name}") for name in weights)

    def read(self, repo: str, revision: str, file: str) -> bytes:
        try:
            response = self.client.get(self.url(repo, revision, file), headers=self.headers, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"cannot reach {self.endpoint}: {exc}") from exc
        if response.status_code != 200:
            raise SourceUnavailable(f"{repo}/{file}: HTTP {response.status_code}")
        return response.content


class HuggingFaceClient(HubClient):
    """The Hugging Face hub (or a mirror) through huggingface_hub; header ranges through our reader."""

    def __init__(self, endpoint: str, client: httpx.Client, token: str | None = None) -> None:
        super().__init__(endpoint, client, token)
        self.api = HfApi(endpoint=self.endpoint, token=token or False)

    def _call(self, repo: str, what: Callable[[], _T]) -> _T:
        try:
            return what()
        except RepositoryNotFoundError as exc:
            raise SourceUnavailable(f"{repo}: repository not found at {self.endpoint}") from exc
        except RevisionNotFoundError as exc:
            raise SourceUnavailable(f"{repo}: revision not found at {self.endpoint}") from exc
        except (HfHubHTTPError, httpx.HTTPError, httpx2.HTTPError, OSError) as exc:
            raise SourceUnavailable(f"{repo}: cannot read from {self.endpoint}: {exc}") from exc

    def files(self, repo: str, revision: str) -> dict[str, int]:
        info = self._call(repo, lambda: self.api.model_info(repo, revision=revision, files_metadata=True))
        return {s.rfilename: int(s.size or 0) for s in info.siblings or []}

    def url(self, repo: str, revision: str, file: str) -> str:
        return hf_hub_url(repo, file, revision=revision, endpoint=self.endpoint)

    def parameters(self, repo: str, revision: str, weights: Sequence[str]) -> int:
        if not weights:
            return 0
        metadata = self._call(repo, lambda: self.api.get_safetensors_metadata(repo, revision=revision))
        return sum(metadata.parameter_count.values())


class ModelScopeClient(HubClient):
    """ModelScope's HTTP API: the same questions, other paths."""

    def files(self, repo: str, revision: str) -> dict[str, int]:
        url = f"{self.endpoint}/api/v1/models/{repo}/repo/files"
        params = {"Revision": revision, "Recursive": "true"}
        try:
            response = self.client.get(url, headers=self.headers, params=params, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"cannot reach {self.endpoint}: {exc}") from exc
        if response.status_code != 200:
            raise SourceUnavailable(f"{repo}: HTTP {response.status_code} from {self.endpoint}")
        entries = (response.json().get("Data") or {}).get("Files") or []
        return {e["Path"]: int(e.get("Size") or 0) for e in entries if e.get("Type") != "tree"}

    def url(self, repo: str, revision: str, file: str) -> str:
        return f"{self.endpoint}/api/v1/models/{repo}/repo?Revision={revision}&FilePath={file}"


def match_file(files: Iterable[str], pattern: str) -> str:
    """The file a (glob) pattern names; the first part of a split GGUF."""
    matches = sorted(f for f in files if fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(Path(f).name, pattern))
    if not matches:
        raise SourceUnavailable(f"no file matches {pattern!r}")
    firsts = [m for m in matches if (split := SPLIT_GGUF.search(m)) is None or split.group(1) == "00001"]
    return (firsts or matches)[0]


def read_hub(key: str, hub: HubClient, repo: str, revision: str, file: str | None) -> ModelMetadata:
    files = hub.files(repo, revision)
    if file is not None:
        name = match_file(files, file)
        if not name.lower().endswith(".gguf"):
            raise SourceUnavailable(f"{repo}/{name}: only GGUF files can be named one by one")
        try:
            facts = read_facts(hub.source(repo, revision, name))
        except GGUFError as exc:
            raise SourceUnavailable(f"{repo}/{name}: {exc}") from exc
        parts = [f for f in files if SPLIT_GGUF.sub("", f) == SPLIT_GGUF.sub("", name)]
        size = sum(files[p] for p in parts) if SPLIT_GGUF.search(name) else files[name]
        return _gguf_metadata(key, name, facts, size, pick_mmproj(list(files)))
    if "config.json" not in files:
        raise SourceUnavailable(f"{repo} has no config.json; name a GGUF with source.huggingface.file")
    where = f"{repo}/config.json"
    config = _config_fields(_json(hub.read(repo, revision, "config.json"), where), where)
    weights = sorted(f for f in files if f.endswith(".safetensors"))
    parameters = hub.parameters(repo, revision, weights)
    size = sum(files[f] for f in weights) or sum(s for f, s in files.items() if f.endswith(".bin"))
    return ModelMetadata(source=key, format="safetensors", weight_bytes=size, parameter_count=parameters, **config)


def _from_agents(key: str, path: str, observed: ObservedState) -> ModelMetadata | None:
    for worker in observed.workers:
        file = worker.file(path)
        if file is not None and file.gguf is not None:
            return _gguf_metadata(key, Path(path).name, file.gguf, file.size)
    return None


def _read_local_path(key: str, path: str, observed: ObservedState) -> ModelMetadata:
    """Read the file here when it is here (the embedded setup), else take an agent's report."""
    local = Path(path)
    if local.exists():
        return read_local(key, local)
    reported = _from_agents(key, path, observed)
    if reported is None:
        raise SourceUnavailable(f"{path} is not on this machine and no agent reported it")
    return reported


def hub_endpoint(cluster_endpoint: str | None) -> str:
    return cluster_endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def gather(
    models: Iterable[Model], observed: ObservedState, catalog: Catalog, client: httpx.Client, endpoint: str
) -> tuple[dict[str, ModelMetadata], dict[str, str]]:
    """Metadata for every model source, and for each one that failed, why."""
    found: dict[str, ModelMetadata] = {}
    failed: dict[str, str] = {}
    hub = HuggingFaceClient(endpoint, client, os.environ.get("HF_TOKEN"))
    for model in models:
        source = model.spec.source
        key = source_key(source)
        if key in found or key in failed:
            continue
        if key in catalog:
            found[key] = catalog[key]
            continue
        try:
            if source.local_path is not None:
                found[key] = _read_local_path(key, source.local_path, observed)
            elif source.huggingface is not None:
                hf = source.huggingface
                found[key] = read_hub(key, hub, hf.repo, hf.revision or "main", hf.file)
            elif source.modelscope is not None:
                ms = source.modelscope
                modelscope = ModelScopeClient(MODELSCOPE, client, os.environ.get("MODELSCOPE_TOKEN"))
                found[key] = read_hub(key, modelscope, ms.repo, ms.revision or "master", ms.file)
        except SourceUnavailable as exc:
            failed[key] = str(exc)
    return found, failed
