"""extendedKVCache is refused where LMCache cannot run, and its LMCache variables belong to it."""

from __future__ import annotations

import pytest

MODEL = """
apiVersion: reconciler/v1
kind: Model
metadata:
  name: m
spec:
  source:
    {source}
  backend: {backend}
  extendedKVCache: {{ramRatio: 2}}
"""


def model(backend: str, source: str = "huggingface: {repo: org/m}") -> str:
    return MODEL.format(backend=backend, source=source)


@pytest.mark.parametrize("backend", ["llama-box", "llama-cpp", "vox-box", "mindie", "custom"])
def test_refused_for_backends_without_lmcache(errors, backend):
    found = [d for d in errors(model(backend)) if d.field == "spec.extendedKVCache"]
    assert len(found) == 1, found
    assert (found[0].line, found[0].col) == (9, 3)
    assert f"backend {backend} cannot use extendedKVCache" in found[0].message


@pytest.mark.parametrize("backend", ["vllm", "sglang", "auto"])
def test_accepted_for_vllm_sglang_and_auto(errors, backend):
    assert errors(model(backend)) == []


def test_auto_with_a_gguf_is_refused(errors):
    [found] = errors(model("auto", "localPath: /models/m.gguf"))
    assert found.field == "spec.extendedKVCache" and "llama-box" in found.message


def test_lmcache_variables_belong_to_extended_kv_cache(errors):
    [found] = errors(model("vllm") + "  env: {LMCACHE_CHUNK_SIZE: '512', LMCACHE_LOCAL_DISK: /tmp/c}\n")
    assert found.field == "spec.env.LMCACHE_CHUNK_SIZE"
