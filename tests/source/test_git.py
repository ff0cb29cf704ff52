"""GitSource against real repositories on disk."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import SourceUnavailable
from reconciler.source import DirSource, GitSource


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "clusters" / "prod").mkdir(parents=True)
    (repo / "clusters" / "prod" / "a.yaml").write_text("a: 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    return repo


def test_fetch_follows_new_commits(origin: Path, tmp_path: Path) -> None:
    source = GitSource(f"file://{origin}", "main", "clusters/prod", tmp_path / "work")
    first = source.fetch()
    assert first.revision == git(origin, "rev-parse", "HEAD")
    assert (first.path / "a.yaml").read_text() == "a: 1\n"
    (origin / "clusters" / "prod" / "a.yaml").write_text("a: 2\n")
    git(origin, "commit", "-qam", "two")
    second = source.fetch()
    assert second.revision == git(origin, "rev-parse", "HEAD") != first.revision
    assert (second.path / "a.yaml").read_text() == "a: 2\n"


def test_force_push_is_followed(origin: Path, tmp_path: Path) -> None:
    source = GitSource(f"file://{origin}", "main", "", tmp_path / "work")
    source.fetch()
    git(origin, "commit", "-q", "--amend", "-m", "rewritten")
    assert source.fetch().revision == git(origin, "rev-parse", "HEAD")


def test_unreachable_and_bad_inputs(origin: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="cannot fetch"):
        GitSource(f"file://{tmp_path}/missing", "main", "", tmp_path / "work").fetch()
    with pytest.raises(SourceUnavailable, match="cannot fetch"):
        GitSource(f"file://{origin}", "nope", "", tmp_path / "work2").fetch()
    with pytest.raises(SourceUnavailable, match="leaves the repository"):
        GitSource(f"file://{origin}", "main", "../..", tmp_path / "work3").fetch()
    with pytest.raises(SourceUnavailable, match="branch"):
        GitSource(f"file://{origin}", "--upload-pack=x", "", tmp_path / "work4")


def test_dir_source_revision_tracks_content(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("x: 1\n")
    source = DirSource(tmp_path)
    first = source.fetch().revision
    assert source.fetch().revision == first
    (tmp_path / "m.yaml").write_text("x: 2\n")
    assert source.fetch().revision != first
    with pytest.raises(SourceUnavailable):
        DirSource(tmp_path / "missing").fetch()


def test_an_older_revision_beside_the_branch(origin: Path, tmp_path: Path) -> None:
    source = GitSource(f"file://{origin}", "main", "clusters/prod", tmp_path / "work")
    first = source.fetch().revision
    (origin / "clusters" / "prod" / "a.yaml").write_text("a: 2\n")
    git(origin, "commit", "-qam", "two")
    head = source.fetch()
    old = source.at(first)
    assert (old.path / "a.yaml").read_text() == "a: 1\n"
    assert (head.path / "a.yaml").read_text() == "a: 2\n"
    assert source.at(first).revision == first  # again: the old checkout is replaced
    with pytest.raises(SourceUnavailable):
        source.at("--orphan")


def test_a_commit_in_a_local_repository_is_announced(origin: Path, tmp_path: Path) -> None:
    source = GitSource(f"file://{origin}", "main", "", tmp_path / "work", watch_refs=True)

    async def first_change() -> None:
        changes = source.changes()
        waiting = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0.5)  # the watch is set up
        assert not waiting.done()
        (origin / "b.yaml").write_text("b: 1\n")
        git(origin, "add", "-A")
        git(origin, "commit", "-qm", "two")
        await asyncio.wait_for(waiting, 30)
        await changes.aclose()

    asyncio.run(first_change())


def test_without_watch_refs_nothing_is_announced_and_only_local_refs_can_be_watched(
    origin: Path, tmp_path: Path
) -> None:
    async def items() -> list[None]:
        return [item async for item in GitSource(f"file://{origin}", "main", "", tmp_path).changes()]

    assert asyncio.run(items()) == []
    with pytest.raises(SourceUnavailable, match="file://"):
        GitSource("https://example.invalid/r.git", "main", "", tmp_path, watch_refs=True)
