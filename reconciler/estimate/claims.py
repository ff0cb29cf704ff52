"""Memory claims: how much RAM and VRAM one instance of a model holds. Pure functions.

GGUF (llama.cpp family) from the file's own header: weights per layer, an f16 KV
cache for the context, compute buffers, and a platform footprint. vLLM-family from
the weight files: weights x 1.2 + 2 GiB (512 MiB for non-LLM), as GPUStack does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.observe import GIB, MIB, GGUFFacts

F16 = 2
F32 = 4
UBATCH = 512
RAM_FOOTPRINT = 150 * MIB
PYTHON_SERVER_FOOTPRINT = 75 * MIB
VRAM_FOOTPRINT = 500 * MIB
VLLM_OVERHEAD = 2 * GIB
VLLM_OVERHEAD_NON_LLM = 512 * MIB
DEFAULT_GMU = 0.9


@dataclass(frozen=True)
class GGUFClaim:
    """RAM and per-GPU VRAM of one llama.cpp instance with ``offload`` layers on GPUs."""

    ram: int
    vram: tuple[int, ...]
    offload: int

    @property
    def vram_total(self) -> int:
        return sum(self.vram)


def kv_bytes_per_layer(facts: GGUFFacts, context: int) -> int:
    """f16 K and V for ``context`` tokens in one layer."""
    return context * facts.head_count_kv * (facts.key_length + facts.value_length) * F16


def compute_bytes(facts: GGUFFacts, context: int, outputs: int, *, reserved: bool) -> int:
    """Scratch memory of one forward pass of a micro-batch.

    The graph needs the larger of the attention scores (heads x context x ubatch,
    f32, no flash attention) and the logits (vocab x outputs, f32), plus activations.
    GPUs reserve the worst case (every position an output); on CPU only what the
    pass touches becomes resident, one logits row per sequence.
    """
    attention = facts.head_count * min(context, facts.context_length or context) * UBATCH * F32
    logits = facts.vocab_size * (UBATCH if reserved else outputs) * F32
    activations = facts.embedding_length * UBATCH * F32 * 4
    return max(attention, logits) + activations


def output_bytes(facts: GGUFFacts) -> int:
    """The output projection; tied to the token embedding when the file has none of its own."""
    return (
        facts.output_bytes
        if facts.output_bytes > facts.embedding_length * F32
        else (facts.output_bytes + facts.embedding_bytes)
    )


def gguf_claim(
    facts: GGUFFacts,
    *,
    context: int,
    parallel: int,
    offload: int,
    split: Sequence[float] = (1.0,),
    python_server: bool = False,
    host_bytes: int = 0,
) -> GGUFClaim:
    """Claim with the last ``offload`` layers on GPUs (``block_count + 1`` adds the output layer).

    ``context`` is ``--ctx-size``: the KV cache holds that many tokens in total, shared by the
    ``parallel`` slots (llama.cpp's server and llama-box split it; gguf-parser counts the same). ``split``
    gives each GPU's share of the offloaded layers; ``host_bytes`` is what the server
    process holds besides llama.cpp (llama_cpp.server's logits array with logits_all).
    """
    layers = facts.block_count
    offload = max(0, min(offload, layers + 1))
    on_gpu_layers = min(offload, layers)
    kv_layer = kv_bytes_per_layer(facts, context)
    cpu_layers = facts.layer_bytes[: layers - on_gpu_layers]
    ram = (PYTHON_SERVER_FOOTPRINT if python_server else RAM_FOOTPRINT) + host_bytes
    ram += facts.embedding_bytes + facts.other_bytes
    ram += sum(cpu_layers) + kv_layer * (layers - on_gpu_layers)
    if offload <= layers:
        ram += facts.output_bytes  # a tied output reuses the token embedding already in RAM
    if offload == 0:
        return GGUFClaim(ram + compute_bytes(facts, context, parallel, reserved=False), (), 0)
    ram += facts.embedding_length * UBATCH * F32 + facts.vocab_size * parallel * F32  # host-side buffers
    shares = _layer_shares(on_gpu_layers, split)
    gpu_layer_bytes = facts.layer_bytes[layers - on_gpu_layers :]
    vram = []
    start = 0
    for index, count in enumerate(shares):
        weights = sum(gpu_layer_bytes[start : start + count])
        start += count
        extra = output_bytes(facts) if offload > layers and index == len(shares) - 1 else 0
        vram.append(
            VRAM_FOOTPRINT + weights + kv_layer * count + extra + compute_bytes(facts, context, parallel, reserved=True)
        )
    return GGUFClaim(ram, tuple(vram), offload)


def _layer_shares(layers: int, split: Sequence[float]) -> list[int]:
    """Whole layers per GPU in proportion to ``split``; every GPU gets its rounded share."""
    total = sum(split) or 1.0
    shares = [int(layers * s / total) for s in split]
    for index in sorted(range(len(split)), key=lambda i: -split[i])[: layers - sum(shares)]:
        shares[index] += 1
    return shares


def vllm_estimate(weight_bytes: int, category: str) -> int:
    """GPUStack's vLLM rule: weights x 1.2 plus 2 GiB (512 MiB for non-LLM categories)."""
    overhead = VLLM_OVERHEAD if category == "llm" else VLLM_OVERHEAD_NON_LLM
    return int(weight_bytes * 1.2) + overhead


def extended_kv_ram(vram: int, ram_ratio: float, max_ram: int | None) -> int:
    """RAM of an LMCache CPU cache: ``max_ram`` when set, else ``ram_ratio`` x the instance's VRAM (GPUStack's rule)."""
    return max_ram if max_ram is not None else int(vram * ram_ratio)


def vox_box_estimate(weight_bytes: int, category: str) -> int:
    """Speech models: text-to-speech needs about three times its weights; speech-to-text as vLLM non-LLM."""
    if category == "text-to-speech":
        return weight_bytes * 3
    return int(weight_bytes * 1.2) + VLLM_OVERHEAD_NON_LLM
