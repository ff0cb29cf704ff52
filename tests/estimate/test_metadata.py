"""Model metadata from local folders and from a hub mirror (our hub client against HF_ENDPOINT-style URLs)."""

from __future__ import annotations

import json
import struct

import pytest

from reconciler.errors import SourceUnavailable
from reconciler.estimate.hub import Fetcher, HuggingFace
from reconciler.estimate.metadata import match_file, read_hub, read_local
from tests.hub_mirror import hub_mirror

CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "num_attention_heads": 14,
    "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}


def write_safetensors(path, tensors):
    header = {name: {"dtype": "BF16", "shape": shape, "data_offsets": [0, 0]} for name, shape in tensors.items()}
    raw = json.dumps(header).encode()
    elements = sum(a * b for a, b in tensors.values())
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (elements * 2))


def make_repo(root):
    repo = root / "Qwen" / "Tiny"
    repo.mkdir(parents=True)
    (repo / "config.json").write_text(json.dumps(CONFIG))
    write_safetensors(repo / "model.safetensors", {"embed.weight": [100, 16], "lm_head.weight": [100, 16]})
    return repo


def test_local_safetensors_folder(tmp_path):
    repo = make_repo(tmp_path)
    metadata = read_local("local:/x", repo)
    assert (metadata.format, metadata.attention_heads, metadata.parameter_count) == ("safetensors", 14, 3200)
    assert metadata.weight_bytes == (repo / "model.safetensors").stat().st_size
    assert metadata.category() == "llm"


def test_hub_safetensors_through_the_hub_client(tmp_path):
    make_repo(tmp_path)
    with hub_mirror(tmp_path) as mirror, Fetcher() as client:
        metadata = read_hub("hf:Qwen/Tiny", HuggingFace(mirror.url, client), "Qwen/Tiny", "main", None)
    assert (metadata.architectures, metadata.attention_heads, metadata.max_position_embeddings) == (
        ["Qwen2ForCausalLM"],
        14,
        32768,
    )
    assert metadata.parameter_count == 3200


def test_hub_without_config_asks_for_a_file(tmp_path):
    (tmp_path / "org" / "ggufs").mkdir(parents=True)
    (tmp_path / "org" / "ggufs" / "a.gguf").write_bytes(b"GGUF")
    with hub_mirror(tmp_path) as mirror, Fetcher() as client, pytest.raises(SourceUnavailable, match="config"):
        read_hub("hf:org/ggufs", HuggingFace(mirror.url, client), "org/ggufs", "main", None)


def test_unreachable_hub_is_source_unavailable():
    with Fetcher() as client, pytest.raises(SourceUnavailable):
        read_hub("hf:a/b", HuggingFace("http://127.0.0.1:9", client), "a/b", "main", None)


def test_match_file_picks_the_first_split_part():
    files = ["m-Q4_K_M-00002-of-00002.gguf", "m-Q4_K_M-00001-of-00002.gguf", "m-Q8_0.gguf"]
    assert match_file(files, "*Q4_K_M*.gguf") == "m-Q4_K_M-00001-of-00002.gguf"
    assert match_file(files, "m-Q8_0.gguf") == "m-Q8_0.gguf"
