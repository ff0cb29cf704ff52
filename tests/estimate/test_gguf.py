"""Our GGUF reader against the real Gemma file and files written by the gguf package."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from reconciler.errors import SourceUnavailable
from reconciler.estimate.gguf import GGML_BLOCKS, FileSource, GGUFError, pick_mmproj, read_header
from reconciler.estimate.hub import Fetcher, HuggingFace
from reconciler.estimate.metadata import ModelMetadata, read_hub
from tests.hub_mirror import hub_mirror


def test_gemma_header(gemma_path):
    header = read_header(FileSource(gemma_path))
    facts = header.facts()
    assert (facts.architecture, facts.block_count, facts.embedding_length) == ("gemma3", 18, 640)
    assert (facts.head_count, facts.head_count_kv, facts.key_length, facts.value_length) == (4, 1, 256, 256)
    assert (facts.context_length, facts.vocab_size, facts.sliding_window) == (32768, 262144, 512)
    assert facts.has_chat_template is False
    oracle = gguf.GGUFReader(gemma_path)
    assert len(header.tensors) == len(oracle.tensors)
    assert sum(t.nbytes for t in header.tensors) == sum(int(t.n_bytes) for t in oracle.tensors)
    assert sum(facts.layer_bytes) + facts.output_bytes + facts.embedding_bytes + facts.other_bytes == sum(
        int(t.n_bytes) for t in oracle.tensors
    )


def test_block_sizes_match_ggml():
    for kind, (block, size) in GGML_BLOCKS.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)] == (block, size)


def write_model(
    path,
    arch,
    *,
    layers=3,
    embd=64,
    heads=8,
    kv_heads=2,
    ctx=4096,
    template=None,
    tied=False,
    quant=gguf.GGMLQuantizationType.F16,
):
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(layers)
    writer.add_embedding_length(embd)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_context_length(ctx)
    writer.add_token_list([f"t{i}".encode() for i in range(100)])
    if template:
        writer.add_chat_template(template)
    dtype = np.float16 if quant == gguf.GGMLQuantizationType.F16 else np.float32
    writer.add_tensor("token_embd.weight", np.zeros((100, embd), dtype=dtype))
    for layer in range(layers):
        writer.add_tensor(f"blk.{layer}.attn_q.weight", np.zeros((embd, embd), dtype=dtype))
        writer.add_tensor(f"blk.{layer}.ffn_up.weight", np.zeros((embd * 2, embd), dtype=dtype))
    writer.add_tensor("output_norm.weight", np.zeros((embd,), dtype=np.float32))
    if not tied:
        writer.add_tensor("output.weight", np.zeros((100, embd), dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize(("arch", "template"), [("llama", "{{ messages }}"), ("qwen2", None), ("phi3", None)])
def test_other_architectures(tmp_path, arch, template):
    path = tmp_path / "m.gguf"
    write_model(path, arch, template=template)
    facts = read_header(FileSource(path)).facts()
    assert (facts.architecture, facts.block_count, facts.embedding_length, facts.head_count) == (arch, 3, 64, 8)
    assert (facts.head_count_kv, facts.key_length, facts.context_length, facts.vocab_size) == (2, 8, 4096, 100)
    assert facts.has_chat_template is (template is not None)
    assert facts.layer_bytes == [(64 * 64 + 128 * 64) * 2] * 3
    assert facts.output_bytes == 100 * 64 * 2 + 64 * 4
    assert facts.embedding_bytes == 100 * 64 * 2


def test_tied_output(tmp_path):
    path = tmp_path / "m.gguf"
    write_model(path, "gemma3", tied=True, quant=gguf.GGMLQuantizationType.F32)
    facts = read_header(FileSource(path)).facts()
    assert facts.output_bytes == 64 * 4


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GGUF",
        b"NOPE" + b"\0" * 40,
        b"GGUF\x09\0\0\0" + b"\0" * 16,
        b"GGUF\x03\0\0\0" + (2**40).to_bytes(8, "little") + b"\0" * 8,
    ],
)
def test_broken_files_raise_gguf_error(tmp_path, data):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(GGUFError):
        read_header(FileSource(path))


def test_truncated_file(tmp_path, gemma_path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(gemma_path.read_bytes()[:100_000])
    with pytest.raises(GGUFError, match="ends at byte"):
        read_header(FileSource(path))


def test_mmproj_prefers_f32():
    files = ["model-Q4_K_M.gguf", "mmproj-model-f16.gguf", "mmproj-model-f32.gguf", "README.md"]
    assert pick_mmproj(files) == "mmproj-model-f32.gguf"
    assert pick_mmproj(["mmproj-model-f16.gguf", "mmproj-q8.gguf"]) == "mmproj-model-f16.gguf"
    assert pick_mmproj(["model.gguf"]) is None


def test_remote_header_by_range_requests(tmp_path, gemma_path):
    repo = tmp_path / "google" / "gemma-3-270m-GGUF"
    repo.mkdir(parents=True)
    (repo / "gemma-3-270m-q4_k_m.gguf").symlink_to(gemma_path)
    (repo / "mmproj-f16.gguf").write_bytes(b"GGUF")
    with hub_mirror(tmp_path) as mirror, Fetcher() as client:
        metadata = read_hub(
            "hf:google/gemma-3-270m-GGUF/*q4_k_m.gguf",
            HuggingFace(mirror.url, client),
            "google/gemma-3-270m-GGUF",
            "main",
            "*q4_k_m.gguf",
        )
        fetched = mirror.served["gemma-3-270m-q4_k_m.gguf"]
    assert isinstance(metadata, ModelMetadata)
    assert metadata.file == "gemma-3-270m-q4_k_m.gguf" and metadata.mmproj == "mmproj-f16.gguf"
    assert metadata.gguf is not None and metadata.gguf.block_count == 18
    assert fetched < gemma_path.stat().st_size / 10, "only the header should travel"


def test_remote_missing_repo_and_file(tmp_path):
    (tmp_path / "org" / "repo").mkdir(parents=True)
    (tmp_path / "org" / "repo" / "a.gguf").write_bytes(b"x")
    with hub_mirror(tmp_path) as mirror, Fetcher() as client:
        hub = HuggingFace(mirror.url, client)
        with pytest.raises(SourceUnavailable, match="repository org/none not found"):
            read_hub("hf:org/none", hub, "org/none", "main", "*.gguf")
        with pytest.raises(SourceUnavailable, match="no file matches"):
            read_hub("hf:org/repo", hub, "org/repo", "main", "*Q8_0.gguf")
