"""Which environment variables an instance may be given: an allowlist of names.

An instance's environment is built from names, never passed through: a variable that
tells a loader, an interpreter or a shell where to find code (``LD_PRELOAD``,
``PYTHONPATH``, ``PATH``, ``HOME``, ...) would run any file the worker holds, model
files the agent downloaded included, whatever ``--allow-exec`` allows. ``validate``
refuses such names at file:line; the agent refuses them again before it starts a
process (defence in depth: a set may come from any token holder).

Allowed: the namespaces of the GPU runtimes, the hubs and the backends, thread and
locale settings, proxies; inside them, the few names that load a library or point at a
code cache are refused all the same.
"""

from __future__ import annotations

import fnmatch

ALLOWED_ENV = (
    # GPU runtimes and collectives
    "CUDA_*",
    "NVIDIA_*",
    "ROCR_*",
    "HIP_*",
    "HSA_*",
    "ROCM_*",
    "ASCEND_*",
    "MLU_*",
    "NCCL_*",
    # hubs
    "HF_*",
    "HUGGING_FACE_*",
    "TRANSFORMERS_*",
    "TOKENIZERS_*",
    "MODELSCOPE_*",
    # backends
    "VLLM_*",
    "SGLANG_*",
    "LLAMA_*",
    "GGML_*",
    "LMCACHE_*",
    "RAY_*",
    "VOX_BOX_*",
    "MINDIE_*",
    "PYTORCH_*",
    "TORCH_*",
    # threads, locale, proxies
    "OMP_*",
    "MKL_*",
    "OPENBLAS_*",
    "TZ",
    "LANG",
    "LC_*",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)

# Inside the allowed namespaces: names that load a library or code from a path they give.
LOADS_CODE = {
    "CUDA_INJECTION32_PATH": "CUDA loads the library it names into the process",
    "CUDA_INJECTION64_PATH": "CUDA loads the library it names into the process",
    "NCCL_NET_PLUGIN": "NCCL loads the plugin library it names",
    "NCCL_TUNER_PLUGIN": "NCCL loads the plugin library it names",
    "NCCL_PROFILER_PLUGIN": "NCCL loads the plugin library it names",
    "GGML_BACKEND_PATH": "ggml loads the backend library it names",
    "HF_HOME": "transformers puts <HF_HOME>/modules on the Python path",
    "HF_MODULES_CACHE": "transformers puts it on the Python path",
    "VLLM_CACHE_ROOT": "vLLM loads compiled code from its cache",
    "VLLM_CONFIG_ROOT": "vLLM reads code-loading settings from it",
    "PYTORCH_KERNEL_CACHE_PATH": "PyTorch loads compiled kernels from it",
    "TORCH_EXTENSIONS_DIR": "PyTorch loads the extensions built there",
}

# Outside the allowlist, the usual suspects get a reason of their own.
_REASONS = (
    ("LD_*", "the dynamic loader runs code it names"),
    ("DYLD_*", "the dynamic loader runs code it names"),
    ("PYTHON*", "it changes which code Python loads"),
    ("PATH", "it changes which program argv[0] runs (the agent's PATH is used)"),
    ("HOME", "Python and shells load code from under HOME"),
    ("BASH_*", "shells run code it names"),
    ("ENV", "shells run code it names"),
    ("PERL*", "it changes which code Perl loads"),
    ("RUBY*", "it changes which code Ruby loads"),
    ("NODE_*", "it changes which code Node.js loads"),
    ("*JAVA*OPTIONS", "it changes which code Java loads"),
    ("GCONV_PATH", "glibc loads the modules it names"),
    ("GLIBC_TUNABLES", "it changes how glibc runs every program"),
    ("TORCHINDUCTOR_*", "PyTorch loads compiled code from the paths it names"),
    ("TRITON_*", "Triton loads compiled kernels from the paths it names"),
    ("RECONCILER_*", "reconciler sets these itself"),
)


def refused_env(name: str) -> str | None:
    """Why ``name`` may not be set in an instance's environment; None when it may."""
    if name in LOADS_CODE:
        return f"{name} is refused: {LOADS_CODE[name]}"
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOWED_ENV):
        return None
    for pattern, reason in _REASONS:
        if fnmatch.fnmatchcase(name, pattern):
            return f"{name} is refused: {reason}"
    return f"{name} is not an allowed name (allowed: {', '.join(ALLOWED_ENV)}; see docs/security.md)"


__all__ = ["ALLOWED_ENV", "LOADS_CODE", "refused_env"]
