"""Desired state from a local folder, followed with watchfiles for a fast edit loop."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import watchfiles

from reconciler.errors import SourceUnavailable
from reconciler.source.git import Checkout

_SUFFIXES = (".yaml", ".yml")


class DirSource:
    """The folder as it is now; its revision is a digest of every manifest's name and bytes."""

    def __init__(self, path: Path) -> None:
        self.root = path.resolve()

    def describe(self) -> dict[str, str]:
        return {"kind": "dir", "url": str(self.root), "branch": "", "path": "."}

    def fetch(self) -> Checkout:
        if not self.root.is_dir():
            raise SourceUnavailable(f"{self.root} is not a folder")
        digest = hashlib.sha256()
        try:
            for file in sorted(self.root.rglob("*")):
                if file.suffix in _SUFFIXES and file.is_file():
                    digest.update(str(file.relative_to(self.root)).encode() + b"\0")
                    digest.update(file.read_bytes() + b"\0")
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {self.root}: {exc.strerror}") from exc
        return Checkout(f"dir-{digest.hexdigest()[:12]}", self.root)

    def at(self, revision: str) -> Checkout:
        """A folder keeps no history: only its current content can be read."""
        raise SourceUnavailable(f"{self.root} is a folder: revision {revision} is gone")

    async def changes(self) -> AsyncIterator[None]:
        """One item per batch of changes to a manifest under the folder."""
        async for batch in watchfiles.awatch(self.root, watch_filter=lambda _c, p: p.endswith(_SUFFIXES)):
            if batch:
                yield None
