"""Model files on this worker: downloads into the cache dir, listing, and removal.

Hugging Face (or a mirror) and ModelScope through the one hub client (``estimate.hub``:
endpoints and tokens from this machine's environment), which resumes interrupted
transfers with Range requests. Files are never deleted with a
deployment; only ``DELETE /v1/files/{id}`` removes one, and only when no instance uses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from reconciler.errors import SourceUnavailable
from reconciler.estimate import Fetcher, FileSource, GGUFError, HubConfig, read_facts
from reconciler.estimate.metadata import match_file
from reconciler.observe import GGUFFacts, ModelFile, ModelFileRef

LIST_DEADLINE = 60.0  # seconds for a repo's file list (a download has no deadline)


def file_id(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:12]


def disk_bytes(path: Path) -> int:
    """Bytes under ``path``, partial downloads included."""
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


LOCAL_DIR_ENTRIES = 4096


def shallow_bytes(path: Path) -> int:
    """Bytes of a file, or of the files directly in a folder (at most LOCAL_DIR_ENTRIES looked at).

    For paths an instance names: reported on every ``GET /v1/state``, so never a walk of a
    tree the agent does not own (``/usr`` took 14 s).
    """
    if not path.is_dir():
        return path.stat().st_size if path.is_file() else 0
    total = 0
    with os.scandir(path) as entries:
        for count, entry in enumerate(entries):
            if count >= LOCAL_DIR_ENTRIES:
                break
            with contextlib.suppress(OSError):
                if entry.is_file():
                    total += entry.stat().st_size
    return total


def not_executable(path: Path) -> None:
    """Clear the execute bits of a downloaded file, or of every file under a downloaded folder:
    a model file is data, never a program (the agent also refuses to run one)."""
    for file in [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        mode = file.stat().st_mode
        if mode & 0o111:
            file.chmod(mode & ~0o111)


@dataclass
class Progress:
    """Download progress the supervisor reads while a fetch runs in a thread."""

    total: int = 0
    root: Path | None = None
    baseline: int = 0

    def fraction(self) -> float | None:
        if not self.total or self.root is None:
            return None
        return min(1.0, max(0, disk_bytes(self.root) - self.baseline) / self.total)


@dataclass
class ModelFiles:
    cache_dir: Path
    hf_endpoint: str | None = None
    hf_token: str | None = None
    _facts: dict[tuple[str, int, float], GGUFFacts | None] = field(default_factory=dict)

    def fetch(self, ref: ModelFileRef, progress: Progress) -> Path:
        """Make ``ref.path`` present; blocking (run it in a thread). Raises SourceUnavailable."""
        target = Path(ref.path)
        if not ref.repo:
            if not target.exists():
                raise SourceUnavailable(f"{ref.path} does not exist on this worker")
            return target
        fetched = self._fetch_hub(ref, progress, modelscope=ref.source.startswith("ms:"))
        not_executable(fetched)
        return fetched

    def _fetch_hub(self, ref: ModelFileRef, progress: Progress, modelscope: bool) -> Path:
        hubs = HubConfig.from_env()
        if self.hf_endpoint or self.hf_token:
            hubs = replace(hubs, hf_endpoint=(self.hf_endpoint or hubs.hf_endpoint).rstrip("/"), hf_token=self.hf_token)
        revision = ref.revision or ("master" if modelscope else "main")
        with Fetcher(LIST_DEADLINE) as fetcher:
            hub = hubs.modelscope(fetcher) if modelscope else hubs.huggingface(fetcher)
            sizes = hub.files(ref.repo, revision)
        root = self.cache_dir / ("modelscope" if modelscope else "huggingface") / ref.repo
        file = _resolve(ref, sizes)
        wanted = [file] if file else list(sizes)
        progress.root, progress.total = root, sum(sizes.get(f, 0) for f in wanted)
        progress.baseline = disk_bytes(root) - sum((root / f).stat().st_size for f in wanted if (root / f).is_file())
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as client:
            for name in wanted:
                hub.download(client, ref.repo, revision, name, root / name, sizes[name])
        return root / file if file else root

    def gguf_facts(self, path: Path) -> GGUFFacts | None:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime)
        if key not in self._facts:
            try:
                self._facts[key] = read_facts(FileSource(path))
            except (GGUFError, SourceUnavailable):
                self._facts[key] = None
        return self._facts[key]

    def listing(self, extra_paths: list[str]) -> list[ModelFile]:
        """Downloaded files and repos, and the local paths instances name, with GGUF facts."""
        found: dict[str, ModelFile] = {}
        for hub in ("huggingface", "modelscope"):
            base = self.cache_dir / hub
            if not base.is_dir():
                continue
            for repo in sorted(p for p in base.glob("*/*") if p.is_dir()):
                name = "/".join(repo.relative_to(base).parts)
                ggufs = sorted(p for p in repo.glob("*.gguf") if p.is_file())
                if ggufs:
                    for gguf in ggufs:
                        found[str(gguf)] = ModelFile(
                            path=str(gguf), size=gguf.stat().st_size, source=f"{hub}:{name}", gguf=self.gguf_facts(gguf)
                        )
                elif any(p.is_file() and ".cache" not in p.relative_to(repo).parts for p in repo.rglob("*")):
                    found[str(repo)] = ModelFile(path=str(repo), size=disk_bytes(repo), source=f"{hub}:{name}")
        for extra in extra_paths:
            path = Path(extra)
            if extra not in found and path.exists():
                facts = self.gguf_facts(path) if path.is_file() and path.suffix == ".gguf" else None
                found[extra] = ModelFile(path=extra, size=shallow_bytes(path), source="local", gguf=facts)
        return [found[k] for k in sorted(found)]

    def remove(self, identifier: str, in_use: set[str]) -> ModelFile | None:
        """Delete a downloaded file or repo by id; refuses local paths and files in use."""
        for entry in self.listing([]):
            if file_id(entry.path) != identifier:
                continue
            if entry.path in in_use:
                raise PermissionError(f"{entry.path} is used by a running instance")
            path = Path(entry.path)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            return entry
        return None


def _resolve(ref: ModelFileRef, sizes: dict[str, int]) -> str:
    """The file ``ref`` names: itself, or what its glob matches (the planner resolves it when it can)."""
    if not ref.file or ref.file in sizes:
        return ref.file
    if any(c in ref.file for c in "*?["):
        return match_file(sizes, ref.file)
    raise SourceUnavailable(f"{ref.repo} has no file {ref.file!r}")
