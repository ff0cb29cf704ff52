"""Downloads into the cache dir from a local mirror that serves a folder the way the hub does."""

from __future__ import annotations

import os
import threading
import time

import pytest

from reconciler.agent.files import ModelFiles, Progress, file_id
from reconciler.errors import SourceUnavailable
from reconciler.observe import ModelFileRef
from tests.hub_mirror import hub_mirror

SIZE = 3 * 1024 * 1024


def repo(tmp_path, size=SIZE):
    folder = tmp_path / "hub" / "org" / "model-GGUF"
    folder.mkdir(parents=True)
    (folder / "model-Q4_K_M.gguf").write_bytes(os.urandom(size))
    (folder / "README.md").write_text("hello")
    return folder


def ref(cache, file="model-Q4_K_M.gguf", name="org/model-GGUF"):
    path = cache / "huggingface" / name / file if file else cache / "huggingface" / name
    return ModelFileRef(source=f"hf:{name}/{file}", path=str(path), repo=name, file=file)


def test_download_reports_progress(tmp_path):
    source = repo(tmp_path)
    cache = tmp_path / "cache"
    seen = []
    with hub_mirror(tmp_path / "hub", throttle=0.02) as mirror:
        files = ModelFiles(cache, mirror.url)
        progress = Progress()
        worker = threading.Thread(target=lambda: files.fetch(ref(cache), progress))
        worker.start()
        while worker.is_alive():
            fraction = progress.fraction()
            if fraction is not None:
                seen.append(fraction)
            time.sleep(0.05)
        worker.join()
    target = cache / "huggingface" / "org" / "model-GGUF" / "model-Q4_K_M.gguf"
    assert target.read_bytes() == (source / "model-Q4_K_M.gguf").read_bytes()
    assert progress.total == SIZE
    assert any(0 < f < 1 for f in seen), seen
    assert seen == sorted(seen)


def test_interrupted_download_resumes(tmp_path):
    big = 24 * 1024 * 1024  # break off after the first half, then resume
    source = repo(tmp_path, big)
    cache = tmp_path / "cache"
    with hub_mirror(tmp_path / "hub", drop_after=big // 2) as mirror:
        files = ModelFiles(cache, mirror.url)
        files.fetch(ref(cache), Progress())  # the transfer breaks off at a third, then resumes
        resumed = [r for r in mirror.ranges if r]
    target = cache / "huggingface" / "org" / "model-GGUF" / "model-Q4_K_M.gguf"
    assert target.read_bytes() == (source / "model-Q4_K_M.gguf").read_bytes()
    assert resumed and int(resumed[-1].split("=")[1].split("-")[0]) > 0, mirror.ranges


def test_missing_repo_and_file_are_clear_errors(tmp_path):
    repo(tmp_path)
    cache = tmp_path / "cache"
    with hub_mirror(tmp_path / "hub") as mirror:
        files = ModelFiles(cache, mirror.url)
        with pytest.raises(SourceUnavailable, match="repository org/none not found"):
            files.fetch(ref(cache, name="org/none"), Progress())
        with pytest.raises(SourceUnavailable, match=r"has no file 'missing\.gguf'"):
            files.fetch(ref(cache, file="missing.gguf"), Progress())


def test_a_glob_is_resolved_by_the_agent_too(tmp_path):
    repo(tmp_path)
    cache = tmp_path / "cache"
    with hub_mirror(tmp_path / "hub") as mirror:
        path = ModelFiles(cache, mirror.url).fetch(ref(cache, file="*Q4_K_M.gguf"), Progress())
    assert path.name == "model-Q4_K_M.gguf" and path.stat().st_size == SIZE


def test_whole_repo_and_local_paths(tmp_path):
    repo(tmp_path)
    cache = tmp_path / "cache"
    with hub_mirror(tmp_path / "hub") as mirror:
        files = ModelFiles(cache, mirror.url)
        folder = files.fetch(ref(cache, file=""), Progress())
    assert (folder / "README.md").read_text() == "hello"
    local = tmp_path / "local.gguf"
    with pytest.raises(SourceUnavailable, match="does not exist"):
        files.fetch(ModelFileRef(source="local:x", path=str(local)), Progress())
    local.write_bytes(b"x")
    assert files.fetch(ModelFileRef(source="local:x", path=str(local)), Progress()) == local


def test_listing_and_removal(tmp_path, gemma_path):
    cache = tmp_path / "cache"
    folder = cache / "huggingface" / "google" / "gemma-GGUF"
    folder.mkdir(parents=True)
    (folder / "gemma.gguf").symlink_to(gemma_path)
    files = ModelFiles(cache)
    [entry] = files.listing([])
    assert entry.gguf is not None and entry.gguf.block_count == 18
    with pytest.raises(PermissionError):
        files.remove(file_id(entry.path), in_use={entry.path})
    assert files.remove(file_id(entry.path), in_use=set()) is not None
    assert files.listing([]) == []
