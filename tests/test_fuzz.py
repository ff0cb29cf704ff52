"""Fuzzing `validate` and `plan` in-process with random and mutated manifests, snapshots, catalogs.

Whatever the files hold, the command exits 0 or 1, every error line names file:line:col,
and nothing else escapes (an internal error would surface as an exception here).
Mutations start from the examples: byte edits with hostile snippets (aliases, tags, deep
brackets, surrogates, huge numbers, odd keys) and structured edits that put random values
at random places of the parsed data, written back as JSON (which is YAML).
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from typer.testing import CliRunner

from reconciler.cli import app
from tests.agent.test_hostile import Agent
from tests.conftest import ROOT

runner = CliRunner()
EXAMPLES = ROOT / "examples"
# The quickstart's GGUF exists on machines that ran `make run`; a path no machine has makes
# every example take its facts from the snapshot, as a CI runner would.
GGUF = "/tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf"
ABSENT = "/nonexistent/reconciler-fuzz/gemma.gguf"
ERROR_LINE = re.compile(r"^.+:\d+:\d+: \S")
FUZZ = settings(
    max_examples=100,
    deadline=timedelta(seconds=10),  # the bound for any one hostile file
    # The autouse cache fixture is per test, not per example: plans here never fill the cache.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def offline_hub() -> Iterator[None]:
    """A mutated repo name must never reach the real hub: point it at a closed local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed}")
        yield


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8").replace(GGUF, ABSENT)


MANIFESTS = {
    "quickstart": {p.name: _read(p) for p in sorted((EXAMPLES / "quickstart").glob("*.yaml"))},
    "multi-gpu-vllm": {p.name: _read(p) for p in sorted((EXAMPLES / "multi-gpu-vllm").glob("*.yaml"))},
}
SNAPSHOTS = [_read(EXAMPLES / "snapshots" / name) for name in ("cpu-only.yaml", "2x8xh100.yaml", "mixed.yaml")]
CATALOG = _read(EXAMPLES / "snapshots" / "catalog.yaml")

HOSTILE = [
    "&a [*a]",
    "*a",
    "&a",
    "!x [id]",
    "!!binary aGk=",
    "<<: *a",
    "[" * 200,
    "{" * 40,
    '"\\ud800"',
    "'': []",
    '"a\\nb": 1',
    "9" * 400,
    "-1",
    "1e400",
    ".nan",
    "-.inf",
    "~",
    "---",
    "...",
    "? [a]\n: b",
    "- ",
    ": ",
    "\t",
    "\n",
    "#",
    "%YAML 1.1\n---\n",
    "\x00",
    "\ufeff",
    "2001-12-14",
    "0x7fffffffffffffff",
    "0o777",
    '"24 GiB"',
    "1099511627776",
    # round 2 (issue 16): control characters, huge durations, odd tags, merges, directives, templates
    "\x1b[2J",
    "\u0085",
    '"\\0"',
    '"/h\\n"',
    "1" + "0" * 400 + "ms",
    "999999999h",
    "0s",
    "!!bool maybe",
    '!!int ""',
    "!!int [1]",
    "!!str 1",
    "<<: {bogus: 1}",
    "%YAML 1.3\n---\n",
    "{{" * 60,
    "LD_PRELOAD: /x.so",
    "PYTHONPATH: /x",
    "# " + "x" * 5000,
]

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["24GiB", "llama-cpp", "Running", "/m.gguf", "a/b", "-1", "0", "1e999", "NaN"])
    | st.sampled_from(["a\x00b", "/health\n", "x\x1b", "1" + "0" * 400 + "ms", "25h", "999ms", "../x.gguf", "//h"])
)
VALUES = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
)


@st.composite
def byte_mutation(draw: st.DrawFn, text: str) -> str:
    """The text with a few edits: hostile snippets inserted, ranges deleted or repeated."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "repeat", "random"]))
        if edit == "insert":
            text = text[:at] + draw(st.sampled_from(HOSTILE)) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif edit == "repeat":
            text = text[:at] + text[at : at + draw(st.integers(1, 40))] * draw(st.integers(2, 50)) + text[at:]
        else:
            text = text[:at] + draw(st.text(max_size=10)) + text[at:]
    return text


def _paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*path, index))
    return found


@st.composite
def value_mutation(draw: st.DrawFn, text: str) -> str:
    """One YAML document's data with random values put at random places, as JSON."""
    documents = list(YAML(typ="safe", pure=True).load_all(text))
    index = draw(st.integers(0, len(documents) - 1))
    data = documents[index]
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(_paths(data)))
        if not where:
            data = draw(VALUES)
            continue
        parent = data
        for step in where[:-1]:
            parent = parent[step]
        parent[where[-1]] = draw(VALUES)
    documents[index] = data
    return "\n---\n".join(json.dumps(d, default=str) for d in documents)


def mutated(text: str) -> st.SearchStrategy[str]:
    return st.one_of(byte_mutation(text), value_mutation(text), st.just(text), st.text(max_size=200))


def _check(args: list[str], error_stream: str) -> None:
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    if result.exit_code == 1:
        lines = (result.stdout if error_stream == "stdout" else result.stderr).splitlines()
        assert lines, result.output
        for line in lines:
            assert ERROR_LINE.match(line), line


def _run(manifests: dict[str, str], snapshot: str, catalog: str) -> None:
    with tempfile.TemporaryDirectory(prefix="reconciler-fuzz-") as tmp:
        root = Path(tmp)
        folder = root / "manifests"
        folder.mkdir()
        for name, text in manifests.items():
            (folder / name).write_bytes(text.encode("utf-8", errors="surrogatepass"))
        (root / "snapshot.yaml").write_bytes(snapshot.encode("utf-8", errors="surrogatepass"))
        (root / "catalog.yaml").write_bytes(catalog.encode("utf-8", errors="surrogatepass"))
        _check(["validate", str(folder)], "stdout")
        _check(
            [
                "plan",
                str(folder),
                "--dry-run",
                "--observed",
                str(root / "snapshot.yaml"),
                "--catalog",
                str(root / "catalog.yaml"),
            ],
            "stderr",
        )


@st.composite
def mutated_manifests(draw: st.DrawFn) -> dict[str, str]:
    files = dict(MANIFESTS[draw(st.sampled_from(sorted(MANIFESTS)))])
    name = draw(st.sampled_from(sorted(files)))
    files[name] = draw(mutated(files[name]))
    return files


@FUZZ
@given(manifests=mutated_manifests(), snapshot=st.sampled_from(SNAPSHOTS))
def test_fuzz_manifests(manifests: dict[str, str], snapshot: str, offline_hub: None) -> None:
    _run(manifests, snapshot, CATALOG)


@FUZZ
@given(snapshot=st.sampled_from(SNAPSHOTS).flatmap(mutated))
def test_fuzz_snapshots(snapshot: str, offline_hub: None) -> None:
    _run(MANIFESTS["quickstart"], snapshot, CATALOG)


@FUZZ
@given(catalog=mutated(CATALOG), manifests=st.sampled_from(sorted(MANIFESTS)))
def test_fuzz_catalogs(catalog: str, manifests: str, offline_hub: None) -> None:
    _run(MANIFESTS[manifests], SNAPSHOTS[1], catalog)


# --- the agent: request heads that are slow, cut short or garbage ---------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = Agent(tmp_path_factory.mktemp("fuzz-agent"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


HEAD = b"PUT /v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 10\r\n\r\n{}"
heads = st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(HEAD)).map(lambda n: HEAD[:n]),
    st.tuples(st.integers(0, len(HEAD)), st.binary(min_size=1, max_size=20)).map(lambda t: HEAD[: t[0]] + t[1]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=heads, linger=st.booleans())
def test_fuzz_agent_request_heads(agent: Agent, head: bytes, linger: bool) -> None:
    """Whatever a client sends, or leaves half-sent, the agent keeps answering /healthz."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as sock:
        sock.sendall(head)
        if linger:  # the connection stays open, its headers unfinished, while another client asks
            assert httpx.get(f"{agent.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{agent.url}/healthz", timeout=10).status_code == 200
