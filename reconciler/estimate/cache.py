"""Model metadata with a cache on disk: hub answers are kept, local files are read again."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import httpx

from reconciler.errors import SpecInvalid
from reconciler.estimate.metadata import Catalog, ModelMetadata, gather, hub_endpoint, load_catalog, save_catalog
from reconciler.observe import ObservedState
from reconciler.spec import Model


def cache_file() -> Path:
    base = os.environ.get("RECONCILER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reconciler"
    )
    return Path(base) / "metadata.json"


def gather_cached(
    models: Iterable[Model], observed: ObservedState, catalogs: Sequence[Path], cluster_endpoint: str | None
) -> tuple[dict[str, ModelMetadata], dict[str, str]]:
    """Metadata from the catalogs, the cache, the agents, local files and the hub; remembers hub answers."""
    known: dict[str, ModelMetadata] = {}
    cache = cache_file()
    if cache.is_file():
        try:
            known.update(load_catalog(cache))
        except SpecInvalid:
            cache.unlink(missing_ok=True)  # a damaged cache is only a cache
    for path in catalogs:
        known.update(load_catalog(path))
    recorded: Catalog = known
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as client:
        found, failed = gather(models, observed, recorded, client, hub_endpoint(cluster_endpoint))
    fresh = {k: v for k, v in found.items() if not k.startswith("local:") and k not in known}
    if fresh:
        with contextlib.suppress(OSError):  # no writable cache: the next plan reads the hub again
            save_catalog(cache, {**{k: v for k, v in known.items() if not k.startswith("local:")}, **fresh})
    return found, failed
