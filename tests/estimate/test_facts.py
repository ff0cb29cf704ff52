"""The FactBook: model facts read once and remembered, read again only when they can have changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from reconciler.estimate import FactBook, FileSource, HubConfig, read_facts, read_header
from reconciler.observe import ObservedState
from reconciler.spec import Model
from tests.hub_mirror import hub_mirror


def model(source: dict[str, object]) -> Model:
    return Model.model_validate(
        {"apiVersion": "reconciler/v1", "kind": "Model", "metadata": {"name": "m"}, "spec": {"source": source}}
    )


def test_a_local_gguf_is_read_again_only_when_its_size_or_mtime_changes(tmp_path: Path, gemma_path: Path) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copyfile(gemma_path, copy)
    book = FactBook(hubs=HubConfig("http://127.0.0.1:9", None, "http://127.0.0.1:9", None))
    models = [model({"localPath": str(copy)})]
    first = book.gather(models, ObservedState()).metadata[f"local:{copy}"]
    stat = copy.stat()
    with copy.open("r+b") as handle:  # not a GGUF any more, yet the same size and mtime: still the cached facts
        handle.write(b"XXXX")
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert book.gather(models, ObservedState()).metadata[f"local:{copy}"] == first
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = book.gather(models, ObservedState())
    assert f"local:{copy}" not in again.metadata and "bad magic" in again.errors[f"local:{copy}"]


def test_a_hub_miss_is_remembered_for_a_while_and_a_hit_for_good(tmp_path: Path) -> None:
    folder = tmp_path / "hub" / "org" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "num_attention_heads": 4}')
    now = [0.0]
    with hub_mirror(tmp_path / "hub") as mirror:
        book = FactBook(hubs=HubConfig(mirror.url, None, mirror.url, None), retry_after=60, clock=lambda: now[0])
        missing, present = (
            [model({"huggingface": {"repo": "org/none"}})],
            [model({"huggingface": {"repo": "org/tiny"}})],
        )
        assert "not found" in book.gather(missing, ObservedState()).errors["hf:org/none"]
        asked = mirror.handler.counts["GET"]
        assert "not found" in book.gather(missing, ObservedState()).errors["hf:org/none"]
        assert mirror.handler.counts["GET"] == asked, "a miss within retry_after asks the hub again"
        now[0] = 61.0
        book.gather(missing, ObservedState())
        assert mirror.handler.counts["GET"] == asked + 1
        assert book.gather(present, ObservedState()).metadata["hf:org/tiny"].attention_heads == 4
        asked = mirror.handler.counts["GET"]
        now[0] = 10_000.0
        assert book.gather(present, ObservedState()).metadata["hf:org/tiny"].attention_heads == 4
        assert mirror.handler.counts["GET"] == asked


def test_the_vocabulary_is_counted_not_decoded(gemma_path: Path) -> None:
    facts = read_facts(FileSource(gemma_path))
    header = read_header(FileSource(gemma_path), lambda key: not key.startswith("tokenizer.ggml."))
    assert "tokenizer.ggml.tokens" not in header.metadata
    assert header.lengths["tokenizer.ggml.tokens"] == facts.vocab_size == 262144
    full = read_header(FileSource(gemma_path))
    assert len(full.metadata["tokenizer.ggml.tokens"]) == 262144 and full.tensors == header.tensors
