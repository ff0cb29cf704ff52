"""Model facts gathered at the edge, once, and remembered.

A ``FactBook`` is what the server keeps for its life (and a command for its one plan): the
pure planner gets its answers as data (``Facts``) and reads nothing itself.

- A local file or folder is read again only when it changed: the key is its path, size
  and modification time (for a folder, those of the files the reader looks at).
- A hub answer is kept by source (repo, file, revision) and endpoint, in memory and in
  the cache file on disk; a hub failure is remembered for ``retry_after`` seconds, so a
  missing repo costs one request per minute, not one per pass.
- An agent's report of a file it holds is taken from the observed state every pass (no I/O).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import SourceUnavailable, SpecInvalid
from reconciler.estimate.hub import DEADLINE, Fetcher, HubConfig
from reconciler.estimate.metadata import (
    ModelMetadata,
    from_agents,
    load_catalog,
    read_local,
    read_source,
    save_catalog,
    source_key,
)
from reconciler.observe import ObservedState
from reconciler.spec import Model, ModelSource

RETRY_AFTER = 60.0  # seconds a failed hub lookup is not asked again
MAX_REMEMBERED = 4096  # entries per cache; past it the oldest go first


@dataclass(frozen=True)
class Facts:
    """What was read about the models' files at the edge, keyed by ``source_key``."""

    metadata: Mapping[str, ModelMetadata] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)


def cache_file() -> Path:
    base = os.environ.get("RECONCILER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reconciler"
    )
    return Path(base) / "metadata.json"


def _stamp(path: Path) -> tuple[object, ...] | None:
    """What tells a local model changed: size and mtime of the file, or of a folder's files."""
    try:
        if path.is_file():
            stat = path.stat()
            return (stat.st_size, stat.st_mtime_ns)
        if path.is_dir():
            names = [path / "config.json", *sorted(path.glob("*.safetensors")), *sorted(path.glob("*.bin"))]
            return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in names if p.is_file())
    except OSError:
        return None
    return None


def _bounded(cache: dict[Any, Any]) -> None:
    while len(cache) > MAX_REMEMBERED:
        cache.pop(next(iter(cache)))


class FactBook:
    """Model facts from catalogs, the disk cache, the agents, local files and the hubs."""

    def __init__(
        self,
        catalogs: Sequence[Path] = (),
        *,
        hubs: HubConfig | None = None,
        disk: Path | None = None,
        retry_after: float = RETRY_AFTER,
        deadline: float = DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``hubs``: endpoints and tokens (default: this machine's environment); ``disk``: the cache file."""
        self.hubs = hubs or HubConfig.from_env()
        self.deadline = deadline
        self.fetcher: Fetcher | None = None
        self.endpoint: str | None = None
        self.retry_after = retry_after
        self.clock = clock
        self.disk = disk
        self.recorded: dict[str, ModelMetadata] = {}
        self.hub: dict[str, ModelMetadata] = {}
        self.local: dict[object, ModelMetadata | str] = {}
        self.misses: dict[str, tuple[float, str]] = {}
        if disk is not None and disk.is_file():
            try:
                self.hub.update(load_catalog(disk))
            except SpecInvalid:
                disk.unlink(missing_ok=True)  # a damaged cache is only a cache
        for path in catalogs:
            self.recorded.update(load_catalog(path))

    def gather(self, models: Iterable[Model], observed: ObservedState, endpoint: str | None = None) -> Facts:
        """Facts for every model source, and for each one that failed, why.

        ``endpoint``: the Cluster's Hugging Face mirror (asked without the token, see ``estimate.hub``).
        """
        if endpoint != self.endpoint:
            self.endpoint, self.misses = endpoint, {}
        try:
            return self._gather(models, observed)
        finally:
            if self.fetcher is not None:
                self.fetcher.close()
                self.fetcher = None

    def _gather(self, models: Iterable[Model], observed: ObservedState) -> Facts:
        found: dict[str, ModelMetadata] = {}
        failed: dict[str, str] = {}
        fresh = False
        for model in models:
            source = model.spec.source
            key = source_key(source)
            if key in found or key in failed:
                continue
            try:
                if key in self.recorded:
                    found[key] = self.recorded[key]
                elif source.local_path is not None:
                    found[key] = self._local(key, source.local_path, observed)
                else:
                    found[key], added = self._hub(key, source)
                    fresh |= added
            except SourceUnavailable as exc:
                failed[key] = str(exc)
        if fresh and self.disk is not None:
            with contextlib.suppress(OSError):  # no writable cache: the hub is asked again next time
                save_catalog(self.disk, self.hub)
        return Facts(found, failed)

    def _local(self, key: str, path: str, observed: ObservedState) -> ModelMetadata:
        """Read the file here when it is here (the embedded setup), else take an agent's report."""
        local = Path(path)
        stamp = _stamp(local)
        if stamp is None:
            reported = from_agents(key, path, observed)
            if reported is None:
                raise SourceUnavailable(f"{path} is not on this machine and no agent reported it")
            return reported
        cached = self.local.get((path, stamp))
        if cached is None:
            try:
                cached = read_local(key, local)
            except SourceUnavailable as exc:
                cached = str(exc)
            self.local[(path, stamp)] = cached
            _bounded(self.local)
        if isinstance(cached, str):
            raise SourceUnavailable(cached)
        return cached

    def _hub(self, key: str, source: ModelSource) -> tuple[ModelMetadata, bool]:
        if key in self.hub:
            return self.hub[key], False
        miss = self.misses.get(key)
        if miss is not None and miss[0] > self.clock():
            raise SourceUnavailable(miss[1])
        if self.fetcher is None:
            self.fetcher = Fetcher(self.deadline)
        try:
            found = read_source(key, source, self.hubs, self.fetcher, self.endpoint)
        except SourceUnavailable as exc:
            self.misses[key] = (self.clock() + self.retry_after, str(exc))
            _bounded(self.misses)
            raise
        self.misses.pop(key, None)
        self.hub[key] = found
        _bounded(self.hub)
        return found, True
