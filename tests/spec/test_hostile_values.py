"""Hostile input, round 2 (issue 16 items 7, 12, 14): every value `validate` accepts works
downstream, odd YAML is exit 1 at file:line (never 3), and output stays data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.spec import validate_paths
from tests.spec.test_hostile import CPU, model, plan, problems

runner = CliRunner()


def only(tmp_path: Path, text: str) -> str:
    """The one problem of a manifest, as printed."""
    found = problems(tmp_path, text)
    assert len(found) == 1, [str(d) for d in found]
    return str(found[0])


# --- item 14: YAML tags, merges, directives -------------------------------------------------

TAGS = [
    ("!!bool maybe", "cannot read 'maybe' as !!bool"),
    ('!!bool ""', "cannot read '' as !!bool"),
    ('!!int ""', "cannot read '' as !!int"),
    ('!!float ""', "cannot read '' as !!float"),
    ("!!int [1]", "!!int needs a single value"),
    ("!!int {a: 1}", "!!int needs a single value"),
    ("!!null [1]", "!!null needs a single value"),
]


@pytest.mark.parametrize(("value", "message"), TAGS)
def test_tags_that_cannot_be_read(tmp_path: Path, value: str, message: str) -> None:
    assert only(tmp_path, model(extra=f"replicas: {value}")).startswith(f"{tmp_path / 'm.yaml'}:8:13: {message}")


def test_str_tags_are_plain_strings(tmp_path: Path) -> None:
    assert problems(tmp_path, model(extra="backend: !!str llama-box\nenv: {OMP_NUM_THREADS: !!str 4}")) == []
    assert "spec.replicas: input should be a valid integer" in only(tmp_path, model(extra="replicas: !!str 1"))


def test_merge_keys_carrying_a_bad_field(tmp_path: Path) -> None:
    text = model(extra="<<: {bogus: 1, replicas: x}").replace("metadata:", "base: &b {a: 1}\nmetadata:")
    found = [str(d) for d in problems(tmp_path, text)]
    where = f"{tmp_path / 'm.yaml'}:7:3: Model/m: spec."  # the merging mapping
    assert any(line.startswith(where + "bogus: unknown field") for line in found), found
    assert any(line.startswith(where + "replicas: input should be a valid integer") for line in found), found


def test_yaml_directive_of_an_unknown_version(tmp_path: Path) -> None:
    assert only(tmp_path, "%YAML 1.3\n---\n" + model()) == f"{tmp_path / 'm.yaml'}:1:1: invalid YAML: " + (
        "version minor part can only be 2 or 1, got (1, 3)"
    )


@pytest.mark.parametrize("template", ["{{" * 300, "x {{ " + "(" * 300 + "port" + ")" * 300 + " }}", "x {{ -" * 60])
def test_deeply_nested_command_templates(tmp_path: Path, template: str) -> None:
    extra = f"backend: custom\ncustom:\n  command: '{template}'"
    assert "spec.custom.command: template " in only(tmp_path, model(extra=extra))


def test_snapshot_tensors_past_eight_exbibytes(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(CPU.read_text().replace("outputBytes: 2560", f"outputBytes: {2**63 - 1}"))
    code, _, stderr = plan(
        tmp_path, model(path="/tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf"), "--observed", str(snapshot)
    )
    line = snapshot.read_text().splitlines().index("    gguf:") + 1
    assert code == 1 and stderr.startswith(f"{snapshot}:{line}:5: snapshot: [0].files[0].gguf: the tensors add up to ")


def test_a_non_utf8_file_name_on_a_strict_utf8_stdout(tmp_path: Path) -> None:
    folder = tmp_path / "manifests"
    folder.mkdir()
    name = os.fsdecode(b"bad-\xff.yaml")
    (folder / name).write_text(model(extra="replicas: -1"), encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    for args in (["validate", str(folder)], ["plan", str(folder), "--observed", str(CPU)]):
        done = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *args], env=env, capture_output=True, timeout=120, check=False
        )
        assert done.returncode == 1, done.stderr
        output = (done.stdout + done.stderr).decode()
        assert f"{folder}/bad-\\udcff.yaml:8:13: Model/m: spec.replicas: " in output, output


# --- item 12: GitHub annotations ----------------------------------------------------------


def test_annotations_are_data_never_commands(tmp_path: Path) -> None:
    hostile = "x%0A::warning::owned,line=1\n::add-mask::y\r%.yaml"
    (tmp_path / hostile).write_text(model(extra="env: {'LD_PRELOAD': '%0A::x'}"), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(tmp_path)], env={"GITHUB_ACTIONS": "true"})
    assert result.exit_code == 1
    commands = [line for line in result.stdout.splitlines() if line.startswith("::")]
    assert len(commands) == 1, result.stdout
    # The runner reads properties up to the first "::"; the message after it is data.
    properties, _, message = commands[0][len("::error ") :].partition("::")
    assert properties.count(",") == 2 and properties.startswith("file=") and properties.endswith(",line=8,col=23")
    assert "%3A%3Awarning%3A%3Aowned%2Cline=1" in properties and "%250A" in properties
    assert message.startswith(f"{tmp_path}/x%250A::warning") and "\r" not in result.stdout


# --- item 7: values validate accepts work downstream --------------------------------------

CONTROL = [
    ('env: {OMP_NUM_THREADS: "4\\0"}', "spec.env.OMP_NUM_THREADS: holds the control character '\\x00'"),
    ('env: {OMP_NUM_THREADS: "4\\n"}', "spec.env.OMP_NUM_THREADS: holds the control character '\\n'"),
    ('backendParameters: ["--a=\\0"]', "spec.backendParameters[0]: holds the control character '\\x00'"),
    ('backendParameters: [["--a", "b\\x1b[2J"]]', "spec.backendParameters[0][1]: holds the control character"),
    (
        'backend: custom\ncustom: {command: "x {{ port }}", healthPath: "/a b"}',
        "spec.custom.healthPath: '/a b' must be a path on the instance itself",
    ),
    (
        'backend: custom\ncustom: {command: "x {{ port }}", healthPath: "/health\\n"}',
        "spec.custom.healthPath: '/health\\n' must be a path on the instance itself",
    ),
    ('backend: custom\ncustom: {command: "x\\0 {{ port }}"}', "spec.custom.command: holds the control character"),
]


@pytest.mark.parametrize(("extra", "message"), CONTROL)
def test_control_characters_are_refused_where_they_reach_a_process(tmp_path: Path, extra: str, message: str) -> None:
    lines = [str(d) for d in problems(tmp_path, model(extra=extra))]
    assert any(line.startswith(f"{tmp_path / 'm.yaml'}:") and message in line for line in lines), lines


def test_a_local_path_with_a_nul(tmp_path: Path) -> None:
    assert "spec.source.localPath: holds the control character '\\x00'" in only(tmp_path, model(path='"/m\\0.gguf"'))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{huggingface: {repo: ../.., file: m.gguf}}", "spec.source.huggingface.repo: "),
        ("{huggingface: {repo: org/m, file: ../../x.gguf}}", "must be a path inside the repository"),
        ("{modelscope: {repo: org/m, file: /etc/x.gguf}}", "must be a path inside the repository"),
        ('{huggingface: {repo: org/m, revision: "main\\r"}}', "holds the control character '\\r'"),
    ],
)
def test_hub_sources_stay_inside_the_cache(tmp_path: Path, source: str, message: str) -> None:
    text = model().replace("  source:\n    localPath: /nowhere/m.gguf\n", f"  source: {source}\n")
    assert message in only(tmp_path, text)


CLUSTER = "apiVersion: reconciler/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  {extra}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('sync: {interval: "1' + "0" * 400 + 'ms"}', "spec.sync.interval: string should have at most 16 characters"),
        ("sync: {interval: 999999999h}", "spec.sync.interval: '999999999h' must be between 1s and 24h"),
        ("sync: {interval: 25h}", "must be between 1s and 24h"),
        ("sync: {interval: 999ms}", "must be between 1s and 24h"),
        ("agents: [{name: a, url: 'http://h:99999'}]", "spec.agents[0].url: 'http://h:99999' is not a usable URL"),
        ('agents: [{name: a, url: "http://h\\x01/"}]', "spec.agents[0].url: holds the control character"),
        ("huggingface: {endpoint: 'http://h:0x50'}", "spec.huggingface.endpoint: 'http://h:0x50' is not a usable URL"),
    ],
)
def test_cluster_values_are_bounded(tmp_path: Path, extra: str, message: str) -> None:
    assert message in only(tmp_path, CLUSTER.format(extra=extra))


@pytest.mark.parametrize("interval", ["1s", "1000ms", "90m", "24h"])
def test_intervals_within_bounds(tmp_path: Path, interval: str) -> None:
    assert problems(tmp_path, CLUSTER.format(extra=f"sync: {{interval: {interval}}}")) == []


# --- item 2: the environment an instance gets --------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("LD_PRELOAD", "the dynamic loader runs code it names"),
        ("LD_LIBRARY_PATH", "the dynamic loader runs code it names"),
        ("PYTHONPATH", "it changes which code Python loads"),
        ("PYTHONSTARTUP", "it changes which code Python loads"),
        ("PATH", "it changes which program argv[0] runs"),
        ("HOME", "Python and shells load code from under HOME"),
        ("BASH_ENV", "shells run code it names"),
        ("CUDA_INJECTION64_PATH", "CUDA loads the library it names"),
        ("HF_HOME", "transformers puts <HF_HOME>/modules on the Python path"),
        ("GGML_BACKEND_PATH", "ggml loads the backend library it names"),
        ("MY_SETTING", "MY_SETTING is not an allowed name (allowed: CUDA_*, "),
    ],
)
def test_env_names_that_would_run_code(tmp_path: Path, name: str, reason: str) -> None:
    line = only(tmp_path, model(extra=f"env: {{{name}: x}}"))
    assert f"{tmp_path / 'm.yaml'}:8:" in line and f"spec.env.{name}: " in line and reason in line, line


def test_env_names_backends_use_are_allowed(tmp_path: Path) -> None:
    names = ["CUDA_LAUNCH_BLOCKING", "HF_HUB_OFFLINE", "VLLM_LOGGING_LEVEL", "NCCL_DEBUG", "OMP_NUM_THREADS", "TZ"]
    assert problems(tmp_path, model(extra="env: {" + ", ".join(f"{n}: '1'" for n in names) + "}")) == []
    assert validate_paths([Path(__file__).parents[2] / "manifests"]).valid
