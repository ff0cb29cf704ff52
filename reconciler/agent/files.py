"""Model files on this worker: downloads into the cache dir, listing, and removal.

Hugging Face (or a mirror: ``HF_ENDPOINT``, and the proxy variables, as huggingface_hub
honours them) through huggingface_hub, which resumes interrupted transfers; ModelScope
through its HTTP API with Range resumes of our own. Files are never deleted with a
deployment; only ``DELETE /v1/files/{id}`` removes one, and only when no instance uses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import httpx2  # huggingface_hub's HTTP client; its errors are translated here
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from reconciler.errors import SourceUnavailable
from reconciler.estimate import FileSource, GGUFError, read_facts
from reconciler.estimate.metadata import match_file
from reconciler.observe import GGUFFacts, ModelFile, ModelFileRef

MODELSCOPE = os.environ.get("MODELSCOPE_ENDPOINT", "https://modelscope.cn")


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
        fetched = (
            self._fetch_modelscope(ref, progress)
            if ref.source.startswith("ms:")
            else self._fetch_huggingface(ref, progress)
        )
        not_executable(fetched)
        return fetched

    def _fetch_huggingface(self, ref: ModelFileRef, progress: Progress) -> Path:
        root = self.cache_dir / "huggingface" / ref.repo
        revision = ref.revision or "main"
        api = HfApi(endpoint=self.hf_endpoint, token=self.hf_token or False)
        try:
            info = api.model_info(ref.repo, revision=revision, files_metadata=True)
            sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
            file = _resolve(ref, sizes)
            wanted = [file] if file else list(sizes)
            progress.root, progress.total = root, sum(sizes.get(f, 0) for f in wanted)
            progress.baseline = disk_bytes(root) - sum(
                (root / f).stat().st_size for f in wanted if (root / f).is_file()
            )
            if file:
                path = hf_hub_download(
                    ref.repo,
                    file,
                    revision=revision,
                    local_dir=root,
                    endpoint=self.hf_endpoint,
                    token=self.hf_token or False,
                )
                return Path(str(path))
            snapshot_download(
                ref.repo, revision=revision, local_dir=root, endpoint=self.hf_endpoint, token=self.hf_token or False
            )
            return root
        except RepositoryNotFoundError as exc:
            raise SourceUnavailable(f"repository {ref.repo} not found") from exc
        except RevisionNotFoundError as exc:
            raise SourceUnavailable(f"revision {revision} of {ref.repo} not found") from exc
        except EntryNotFoundError as exc:
            raise SourceUnavailable(f"{ref.repo} has no file {ref.file!r}") from exc
        except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
            raise SourceUnavailable(f"download of {ref.repo} failed: {exc}") from exc

    def _fetch_modelscope(self, ref: ModelFileRef, progress: Progress) -> Path:
        root = self.cache_dir / "modelscope" / ref.repo
        revision = ref.revision or "master"
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True) as client:
            try:
                listing = client.get(
                    f"{MODELSCOPE}/api/v1/models/{ref.repo}/repo/files",
                    params={"Revision": revision, "Recursive": "true"},
                )
            except httpx.HTTPError as exc:
                raise SourceUnavailable(f"cannot reach {MODELSCOPE}: {exc}") from exc
            if listing.status_code != 200:
                raise SourceUnavailable(f"repository {ref.repo} not found on ModelScope (HTTP {listing.status_code})")
            entries = (listing.json().get("Data") or {}).get("Files") or []
            sizes = {e["Path"]: int(e.get("Size") or 0) for e in entries if e.get("Type") != "tree"}
            file = _resolve(ref, sizes)
            wanted = [file] if file else list(sizes)
            progress.root, progress.total = root, sum(sizes[f] for f in wanted)
            for name in wanted:
                if name.startswith("/") or ".." in name.split("/"):  # the listing must not write outside the repo
                    raise SourceUnavailable(f"ModelScope listed {name!r} in {ref.repo}: not a path inside it")
                url = f"{MODELSCOPE}/api/v1/models/{ref.repo}/repo"
                _resume_download(client, url, {"Revision": revision, "FilePath": name}, root / name, sizes[name])
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


def _resume_download(client: httpx.Client, url: str, params: dict[str, str], target: Path, size: int) -> None:
    """Stream into ``<target>.incomplete``, continuing where an earlier attempt stopped."""
    if target.is_file() and (not size or target.stat().st_size == size):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".incomplete")
    start = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        with client.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code not in (200, 206):
                raise SourceUnavailable(f"{params.get('FilePath')}: HTTP {response.status_code}")
            mode = "ab" if response.status_code == 206 else "wb"
            with partial.open(mode) as handle:
                for chunk in response.iter_bytes(1024 * 1024):
                    handle.write(chunk)
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"download of {params.get('FilePath')} interrupted: {exc}") from exc
    partial.replace(target)
