"""Stage 4: estimates. GGUF and safetensors readers, model metadata, the hubs, memory claims."""

from reconciler.estimate.claims import GGUFClaim, gguf_claim, vllm_estimate, vox_box_estimate
from reconciler.estimate.facts import FactBook, Facts, cache_file
from reconciler.estimate.gguf import FileSource, GGUFError, HttpRangeSource, read_facts, read_header
from reconciler.estimate.hub import Fetcher, HubConfig
from reconciler.estimate.metadata import (
    Catalog,
    ModelMetadata,
    load_catalog,
    save_catalog,
    source_key,
)

__all__ = [
    "Catalog",
    "FactBook",
    "Facts",
    "Fetcher",
    "FileSource",
    "GGUFClaim",
    "GGUFError",
    "HttpRangeSource",
    "HubConfig",
    "ModelMetadata",
    "cache_file",
    "gguf_claim",
    "load_catalog",
    "read_facts",
    "read_header",
    "save_catalog",
    "source_key",
    "vllm_estimate",
    "vox_box_estimate",
]
