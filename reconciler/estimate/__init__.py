"""Stage 4: estimates. GGUF and safetensors readers, model metadata, memory claims."""

from reconciler.estimate.cache import cache_file, gather_cached
from reconciler.estimate.claims import GGUFClaim, gguf_claim, vllm_estimate, vox_box_estimate
from reconciler.estimate.gguf import FileSource, GGUFError, HttpRangeSource, read_facts, read_header
from reconciler.estimate.metadata import (
    Catalog,
    ModelMetadata,
    gather,
    hub_endpoint,
    load_catalog,
    save_catalog,
    source_key,
)

__all__ = [
    "Catalog",
    "FileSource",
    "GGUFClaim",
    "GGUFError",
    "HttpRangeSource",
    "ModelMetadata",
    "cache_file",
    "gather",
    "gather_cached",
    "gguf_claim",
    "hub_endpoint",
    "load_catalog",
    "read_facts",
    "read_header",
    "save_catalog",
    "source_key",
    "vllm_estimate",
    "vox_box_estimate",
]
