"""Desired state from a git repository: cloned once into the data dir, fetched by revision."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import git
import watchfiles

from reconciler.errors import SourceUnavailable

_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")


@dataclass(frozen=True)
class Checkout:
    """One fetched revision: where its manifests lie on disk."""

    revision: str
    path: Path


class GitSource:
    """``url`` (file://, ssh or https), ``branch`` and ``path`` inside the repository."""

    def __init__(self, url: str, branch: str, path: str, workdir: Path, watch_refs: bool = False) -> None:
        """``watch_refs``: a file:// repository on this machine announces each change of its refs."""
        if not _BRANCH.match(branch) or branch.startswith("-") or ".." in branch:
            raise SourceUnavailable(f"{branch!r} is not a branch name")
        if watch_refs and not url.startswith("file://"):
            raise SourceUnavailable(f"{url}: only a file:// repository's refs can be watched")
        self.watch_refs = watch_refs
        self.url = url
        self.branch = branch
        self.path = path.strip("/") or "."
        self.dir = workdir / hashlib.sha256(f"{url}#{branch}".encode()).hexdigest()[:16]

    def describe(self) -> dict[str, str]:
        return {"kind": "git", "url": self.url, "branch": self.branch, "path": self.path}

    def fetch(self) -> Checkout:
        """Bring the clone to the branch's newest commit; raises SourceUnavailable on any git failure."""
        try:
            repo = self._repo()
            repo.git.fetch("--quiet", "origin", f"+refs/heads/{self.branch}:refs/remotes/origin/{self.branch}")
            repo.git.reset("--quiet", "--hard", f"refs/remotes/origin/{self.branch}")
            revision = repo.head.commit.hexsha
        except (git.GitError, OSError, ValueError) as exc:
            raise SourceUnavailable(f"cannot fetch {self.url} ({self.branch}): {_first_line(exc)}") from exc
        root = self.dir.resolve()
        target = (root / self.path).resolve()
        if target != root and root not in target.parents:
            raise SourceUnavailable(f"path {self.path!r} leaves the repository")
        return Checkout(revision, target)

    def at(self, revision: str) -> Checkout:
        """An older revision beside the branch's checkout (the last applied one, after a restart)."""
        if not re.fullmatch(r"[0-9a-f]{7,64}", revision):
            raise SourceUnavailable(f"{revision!r} is not a commit id")
        target = self.dir.with_name(self.dir.name + "-applied")
        try:
            repo = self._repo()
            if target.exists():
                repo.git.worktree("remove", "--force", str(target))
            repo.git.worktree("prune")
            repo.git.worktree("add", "--quiet", "--detach", "--force", str(target), revision)
        except (git.GitError, OSError) as exc:
            raise SourceUnavailable(f"cannot check out {revision[:12]}: {_first_line(exc)}") from exc
        return Checkout(revision, (target / self.path).resolve())

    async def changes(self) -> AsyncIterator[None]:
        """With ``watch_refs``, one item per change of the repository's refs: a commit there is
        fetched at once, not at the next poll. Otherwise nothing."""
        if not self.watch_refs:
            return
        local = Path(self.url.removeprefix("file://"))
        gitdir = local / ".git" if (local / ".git").is_dir() else local
        if not gitdir.is_dir():
            return

        def ref(_change: object, path: str) -> bool:
            return f"{os.sep}refs{os.sep}" in path or path.endswith("packed-refs")

        async for batch in watchfiles.awatch(gitdir, watch_filter=ref):
            if batch:
                yield None

    def _repo(self) -> git.Repo:
        if (self.dir / ".git").is_dir():
            return git.Repo(self.dir)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        # `--` keeps a URL that starts with a dash from being read as an option.
        git.Git(self.dir.parent).clone(
            "--quiet", "--no-checkout", "--branch", self.branch, "--", self.url, str(self.dir)
        )
        return git.Repo(self.dir)


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "stderr", "") or exc).strip()
    return text.splitlines()[-1].strip() if text else type(exc).__name__
