"""The agent's exec policy covers the whole command (issue 16 item 2), against a real agent:
no environment that makes a loader or interpreter run other code, and no downloaded file
ever run or executable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.agent.files import ModelFiles, Progress
from reconciler.observe import ModelFileRef
from tests.agent.test_hostile import SHOW_ENV, Agent, agent, in_error, spec
from tests.hub_mirror import hub_mirror

__all__ = ["agent"]

REFUSED = {
    "ld": ("LD_PRELOAD", "env LD_PRELOAD is refused: the dynamic loader runs code it names"),
    "py": ("PYTHONPATH", "env PYTHONPATH is refused: it changes which code Python loads"),
    "path": ("PATH", "env PATH is refused: it changes which program argv[0] runs"),
    "home": ("HOME", "env HOME is refused: Python and shells load code from under HOME"),
    "other": ("MY_SETTING", "env MY_SETTING is not an allowed name"),
}


def test_environments_that_would_run_other_code_are_refused(agent: Agent) -> None:
    payload = agent.data / "cache" / "huggingface" / "org" / "m"
    payload.mkdir(parents=True)
    program = payload / "run"
    program.write_text("#!/bin/sh\ntouch pwned\n")
    program.chmod(0o755)
    instances = [spec(key, env={name: str(payload)}) for key, (name, _) in REFUSED.items()]
    instances.append(spec("downloaded", argv=[str(program)]))
    instances.append(spec("fine", SHOW_ENV, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}))
    assert agent.put(instances).status_code == 200  # accepted: one bad instance never blocks the set
    for key, (_, reason) in REFUSED.items():
        assert reason in str(agent.wait(key, in_error)["message"])
    assert "is a downloaded file; downloads are never run" in str(agent.wait("downloaded", in_error)["message"])
    agent.wait("fine", lambda i: i is not None and i["pid"] is not None)
    started = {p.stem for p in (agent.data / "log" / "serve").glob("*.log")}
    assert started == {"fine"}, started
    assert not (agent.data / "pwned").exists()


def test_downloaded_files_are_never_executable(tmp_path: Path) -> None:
    hub = tmp_path / "hub" / "org" / "m"
    hub.mkdir(parents=True)
    (hub / "model.safetensors").write_bytes(b"x" * 64)
    (hub / "tool.sh").write_text("#!/bin/sh\n")
    cache = tmp_path / "cache"
    ref = ModelFileRef(source="hf:org/m", path=str(cache / "huggingface" / "org" / "m"), repo="org/m")
    with hub_mirror(tmp_path / "hub") as mirror:
        files = ModelFiles(cache, mirror.url)
        folder = files.fetch(ref, Progress())
        (folder / "tool.sh").chmod(0o755)  # as if something had marked it executable since
        files.fetch(ref, Progress())
    for name in ("model.safetensors", "tool.sh"):
        assert stat.S_IMODE((folder / name).stat().st_mode) & 0o111 == 0, name


@pytest.mark.parametrize("name", ["CUDA_INJECTION64_PATH", "GGML_BACKEND_PATH", "RECONCILER_INSTANCE"])
def test_names_inside_allowed_namespaces_that_load_code(name: str) -> None:
    from reconciler.agent.wire import refused_environment

    assert refused_environment({name: "/x"}) is not None
    assert refused_environment({"CUDA_LAUNCH_BLOCKING": "1", "NCCL_DEBUG": "INFO"}) is None
