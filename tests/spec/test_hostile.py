"""Hostile and broken input (issue 9): one test per class, each a clean error at file:line:col.

`plan` runs in CI on every pull request, so manifests, snapshots and catalogs are untrusted:
none may hang, exhaust memory, or end in a traceback.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.errors import Diagnostic
from reconciler.estimate.gguf import MAX_HEADER_BYTES, FileSource, GGUFError, read_header
from reconciler.spec import validate_paths
from reconciler.spec.loader import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from tests.conftest import ROOT

runner = CliRunner()
MODEL = """\
apiVersion: reconciler/v1
kind: Model
metadata:
  name: {name}
spec:
  source:
    localPath: {path}
{extra}"""
CPU = ROOT / "examples" / "snapshots" / "cpu-only.yaml"


def model(name: str = "m", path: str = "/nowhere/m.gguf", extra: str = "") -> str:
    return MODEL.format(name=name, path=path, extra=textwrap.indent(textwrap.dedent(extra), "  "))


def problems(tmp_path: Path, text: str) -> list[Diagnostic]:
    file = tmp_path / "m.yaml"
    file.write_text(text, encoding="utf-8")
    return list(validate_paths([file]).diagnostics)


def plan(tmp_path: Path, manifest: str, *extra: str) -> tuple[int, str, str]:
    folder = tmp_path / "manifests"
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(manifest, encoding="utf-8")
    result = runner.invoke(app, ["plan", str(folder), "--dry-run", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def alias_bomb(width: int, levels: int) -> str:
    lines = ["b0: &b0 [x]"]
    lines += [f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# --- YAML resource limits ------------------------------------------------------------


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_cap(tmp_path):
    text = alias_bomb(9, 8) + model(extra="backendParameters: *b8\n")
    assert len(text.encode()) < 1024
    [problem] = problems(tmp_path, text)
    assert problem.line == 6 and f"more than {MAX_NODES} values" in problem.message


def test_aliases_below_the_cap_still_work(tmp_path):
    text = model(extra="scheduling:\n  matchLabels: *zone\n").replace(
        "  name: m\n", "  name: m\n  labels: &zone {zone: a}\n"
    )
    assert problems(tmp_path, text) == []


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a [[[*a]]]\n"])
def test_self_referencing_alias_is_refused(tmp_path, text):
    [problem] = problems(tmp_path, text)
    assert (problem.line, problem.col) == (1, text.index("*") + 1)
    assert "refers to a node that contains it" in problem.message


@pytest.mark.parametrize("text", ["[" * 2000 + "]" * 2000, "a:\n" + "".join(f"{'  ' * i}- \n" for i in range(100))])
def test_deep_nesting_is_refused(tmp_path, text):
    [problem] = problems(tmp_path, text)
    assert f"nested deeper than {MAX_DEPTH} levels" in problem.message


def test_size_is_checked_before_reading(tmp_path):
    huge = tmp_path / "m.yaml"
    with huge.open("wb") as handle:
        handle.truncate(64 * 1024**3)  # sparse: reading it whole would take 64 GiB
    [problem] = validate_paths([huge]).diagnostics
    assert (problem.path, problem.line, problem.col) == (str(huge), 1, 1)
    assert f"larger than {MAX_FILE_BYTES} bytes" in problem.message


def test_fifo_is_read_no_further_than_the_limit(tmp_path):
    fifo = tmp_path / "snapshot.yaml"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["dd", "if=/dev/zero", f"of={fifo}", "bs=1M", "count=8"], stderr=subprocess.DEVNULL)
    try:
        code, _, stderr = plan(tmp_path, model(), "--observed", str(fifo))
    finally:
        writer.kill()
        writer.wait()
    assert (code, stderr) == (1, f"{fifo}:1:1: snapshot is larger than {MAX_FILE_BYTES} bytes, the limit\n")


# --- values the models cannot hold ---------------------------------------------------


def test_custom_tags_are_refused(tmp_path):
    for tag in ("!x [id]", "!!python/object:os.system [id]", "!!binary aGk=", "!!set {a}"):
        [problem] = problems(tmp_path, model(extra=f"backendParameters: {tag}\n"))
        assert problem.line == 8 and "is not supported: write a plain value" in problem.message, tag
    assert problems(tmp_path, model(extra="backendParameters: !!seq [--threads=2]\n")) == []


def test_lone_surrogates_are_refused(tmp_path):
    [problem] = problems(tmp_path, model(name='"\\ud800"'))
    assert (problem.line, problem.col) == (4, 9) and "lone surrogate \\ud800" in problem.message
    [problem] = problems(tmp_path, model(extra='env: {"\\udfff": x}\n'))
    assert problem.line == 8


@pytest.mark.parametrize("digits", [20, 400, 5000])
def test_integers_past_64_bits_are_refused(tmp_path, digits):
    [problem] = problems(tmp_path, model(extra=f"replicas: {'9' * digits}\n"))
    assert (problem.line, problem.col) == (8, 13) and "integer out of range" in problem.message
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(f"- name: w\n  memoryTotal: {'9' * digits}\n", encoding="utf-8")
    code, _, stderr = plan(tmp_path, model(), "--observed", str(snapshot))
    assert (code, stderr) == (1, f"{snapshot}:2:16: integer out of range (64 bits at most)\n")


def test_sizes_written_with_units_are_bounded(tmp_path):
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(f'- name: w\n  memoryTotal: "{"9" * 400} GiB"\n', encoding="utf-8")
    code, _, stderr = plan(tmp_path, model(), "--observed", str(snapshot))
    assert code == 1 and stderr.startswith(f"{snapshot}:2:16: snapshot: [0].memoryTotal: ")


@pytest.mark.parametrize(("key", "shown"), [("''", 'spec[""]'), ('"a\\nb"', 'spec["a\\nb"]')])
def test_odd_keys_give_one_line_each(tmp_path, key, shown):
    [problem] = problems(tmp_path, model(extra=f"{key}: []\n"))
    assert problem.field == shown and "\n" not in str(problem)
    result = runner.invoke(app, ["validate", str(tmp_path / "m.yaml")])
    assert result.exit_code == 1 and result.stdout.count("\n") == 1


def test_worker_names_that_would_break_plan_lines_are_refused(tmp_path):
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text('- name: ""\n  memoryTotal: 1\n- name: "a\\nb"\n  memoryTotal: 1\n', encoding="utf-8")
    code, _, stderr = plan(tmp_path, model(), "--observed", str(snapshot))
    assert code == 1
    assert [line.split(": ")[:3] for line in stderr.splitlines()] == [
        [f"{snapshot}:1:9", "snapshot", "[0].name"],
        [f"{snapshot}:3:9", "snapshot", "[1].name"],
    ]


def test_huge_gguf_layer_counts_are_refused_before_anything_is_allocated(tmp_path):
    snapshot = tmp_path / "snapshot.yaml"
    facts = "{architecture: llama, blockCount: %d, embeddingLength: 1, headCount: 1, headCountKv: 1, keyLength: 1,"
    facts += " valueLength: 1, contextLength: 1, layerBytes: 5}"
    for count in (2**40, 200_000_000):
        snapshot.write_text(f"- name: w\n  memoryTotal: 1\n  files:\n  - path: /m.gguf\n    gguf: {facts % count}\n")
        code, _, stderr = plan(tmp_path, model(), "--observed", str(snapshot))
        assert code == 1 and f"{snapshot}:5:45: snapshot: [0].files[0].gguf.blockCount: " in stderr


@pytest.mark.parametrize("body", ["hello\n", "5\n", "{source: x}\n", "- []\n---\n7\n"])
def test_catalog_that_is_not_a_list(tmp_path, body):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(body, encoding="utf-8")
    code, _, stderr = plan(tmp_path, model(), "--observed", str(CPU), "--catalog", str(catalog))
    assert code == 1 and "a catalog is a YAML/JSON list of entries" in stderr
    assert all(line.startswith(f"{catalog}:") for line in stderr.splitlines())


def _safetensors(header: object) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"config.json": b"{not json"}, "config.json:1:2: not valid JSON"),
        ({"config.json": b"5"}, "config.json must hold a JSON object"),
        ({"config.json": b"{}", "m.safetensors": b"abc"}, "shorter than 8 bytes"),
        ({"config.json": b"{}", "m.safetensors": struct.pack("<Q", 2**63)}, "safetensors header of"),
        ({"config.json": b"{}", "m.safetensors": struct.pack("<Q", 50) + b"{}"}, "ends inside the safetensors header"),
        ({"config.json": b"{}", "m.safetensors": _safetensors([1])}, "header is not a JSON object"),
        ({"config.json": b"{}", "m.safetensors": _safetensors({"w": {"shape": ["x"]}})}, "has no valid shape"),
        ({"config.json": b'{"num_attention_heads": "many"}', "m.safetensors": _safetensors({})}, None),
    ],
)
def test_broken_local_model_folder_is_a_reason_not_a_crash(tmp_path, files, reason):
    folder = tmp_path / "weights"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    code, stdout, stderr = plan(tmp_path, model(path=str(folder)), "--observed", str(CPU))
    assert (code, stderr) == (0, "")
    if reason is not None:
        assert f"cannot read the model's metadata: {folder}/" in stdout and reason in stdout


def test_internal_errors_exit_3_with_one_line():
    program = textwrap.dedent("""
        import sys
        from reconciler.cli import app, run

        @app.command("boom")
        def boom() -> None:
            raise RuntimeError("x" * 3)

        sys.argv = ["reconcile", "boom"]
        run()
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 3
    assert done.stderr.splitlines() == [done.stderr.strip()] and "internal error (a bug in reconciler" in done.stderr


def _gguf(path: Path, **values: object) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in values.items():
        if isinstance(value, str):
            writer.add_string(f"llama.{key}", value)
        else:
            writer.add_uint64(f"llama.{key}", int(str(value)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"block_count": 2**40}, "llama.block_count is 1099511627776; no model has more than 1024 layers"),
        ({"block_count": "many"}, "llama.block_count is 'many', not a count"),
        ({"block_count": 2, "embedding_length": 2**63}, "llama.embedding_length is 9223372036854775808, not a count"),
    ],
)
def test_hostile_gguf_header_is_a_reason_not_a_crash(tmp_path, values, reason):
    path = tmp_path / "m.gguf"
    _gguf(path, **values)
    code, stdout, stderr = plan(tmp_path, model(path=str(path)), "--observed", str(CPU))
    assert (code, stderr) == (0, "") and f"cannot read the model's metadata: {path}: {reason}" in stdout


def test_gguf_header_is_never_read_past_its_cap(tmp_path):
    path = tmp_path / "m.gguf"
    # version 3, no tensors, one key whose name claims 2^40 bytes
    path.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**40) + b"x" * 64)
    with pytest.raises(GGUFError, match=f"header longer than {MAX_HEADER_BYTES} bytes"):
        read_header(FileSource(path))
