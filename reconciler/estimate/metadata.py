"""Facts about a model's files: what the estimate needs, and the readers of each source.

Where they come from, first match wins (``estimate.facts.FactBook``): a recorded catalog
(``--catalog``), the on-disk cache, the local file system or an agent's report of a file it
holds, the hub (Hugging Face or a mirror, ``estimate.hub``) or ModelScope.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from reconciler.errors import Diagnostic, SourceUnavailable, SpecInvalid
from reconciler.estimate.gguf import ByteSource, FileSource, GGUFError, HttpRangeSource, pick_mmproj, read_facts
from reconciler.estimate.hub import Fetcher, Hub, HubConfig
from reconciler.observe import GGUFFacts, ObservedState
from reconciler.spec import ModelSource
from reconciler.spec.loader import plain, read_file, read_yaml_file

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


def match_file(files: Iterable[str], pattern: str) -> str:
    """The file a (glob) pattern names; the first part of a split GGUF."""
    matches = sorted(f for f in files if fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(Path(f).name, pattern))
    if not matches:
        raise SourceUnavailable(f"no file matches {pattern!r}")
    firsts = [m for m in matches if (split := SPLIT_GGUF.search(m)) is None or split.group(1) == "00001"]
    return (firsts or matches)[0]


def read_hub(key: str, hub: Hub, repo: str, revision: str, file: str | None) -> ModelMetadata:
    files = hub.files(repo, revision)
    if file is not None:
        name = match_file(files, file)
        if not name.lower().endswith(".gguf"):
            raise SourceUnavailable(f"{repo}/{name}: only GGUF files can be named one by one")
        try:
            facts = read_facts(HttpRangeSource(hub.range(hub.url(repo, revision, name))))
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
    parameters = sum(
        _safetensors_parameters(HttpRangeSource(hub.range(hub.url(repo, revision, name))), f"{repo}/{name}")
        for name in weights
    )
    size = sum(files[f] for f in weights) or sum(s for f, s in files.items() if f.endswith(".bin"))
    return ModelMetadata(source=key, format="safetensors", weight_bytes=size, parameter_count=parameters, **config)


def read_source(
    key: str, source: ModelSource, hubs: HubConfig, fetcher: Fetcher, endpoint: str | None
) -> ModelMetadata:
    """One hub source's metadata: Hugging Face (``endpoint``: the Cluster's mirror) or ModelScope."""
    if source.huggingface is not None:
        hf = source.huggingface
        return read_hub(key, hubs.huggingface(fetcher, endpoint), hf.repo, hf.revision or "main", hf.file)
    if source.modelscope is not None:
        ms = source.modelscope
        return read_hub(key, hubs.modelscope(fetcher), ms.repo, ms.revision or "master", ms.file)
    raise SourceUnavailable(f"{key}: not a hub source")


def from_agents(key: str, path: str, observed: ObservedState) -> ModelMetadata | None:
    """The facts an agent reported for a file it holds at ``path``."""
    for worker in observed.workers:
        file = worker.file(path)
        if file is not None and file.gguf is not None:
            return _gguf_metadata(key, Path(path).name, file.gguf, file.size)
    return None
