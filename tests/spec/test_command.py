"""User command templates: jinja2's sandbox, bounded syntax, values as whole argv tokens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.spec.command import SAMPLE_VARIABLES, CommandTemplateError, check_command, compile_command

EXPLOIT = "srv {{ cycler.__init__.__globals__.os.popen('touch %s').read() }}"


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (EXPLOIT % "/tmp/x", "uses Call"),
        ("srv {{ port.__class__.__mro__ }}", "uses Getattr"),
        ("srv {{ port['__class__'] }}", "uses Getitem"),
        ("{% for i in range(9) %}{% for j in range(9) %}x{% endfor %}{% endfor %}", "uses For"),
        ("srv {{ 'a' * 1000000000 }}", "uses Mul"),
        ("srv {{ 9 ** 99999999 }}", "uses Pow"),
        ("srv {{ port | center(1000000000) }}", "unknown filter 'center'"),
        ("srv {% macro m() %}{% endmacro %}", "uses Macro"),
        ("srv {{ secret }}", "unknown variable 'secret'"),
        ("srv '{{ port }}", "No closing quotation"),
        ("{{ '' }}", "command is empty"),
        ("srv \ue000", "reserved characters"),
        ("srv " + "x" * 5000, "longer than 4096"),
    ],
)
def test_refused_templates(command: str, reason: str) -> None:
    with pytest.raises(CommandTemplateError, match=reason):
        check_command(command)


def test_validate_refuses_the_exploit_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: reconciler/v1\nkind: Model\nmetadata: {name: m}\nspec:\n"
        "  source: {localPath: /m.gguf}\n  backend: custom\n"
        f'  custom: {{command: "{EXPLOIT % marker}"}}\n',
        encoding="utf-8",
    )
    for command in ("validate", "plan"):
        args = [sys.executable, "-m", "reconciler.cli", command, str(manifest if command == "validate" else tmp_path)]
        if command == "plan":
            args += ["--dry-run", "--observed", str(Path(__file__).parents[2] / "examples/snapshots/cpu-only.yaml")]
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        assert "m.yaml:7:" in result.stdout + result.stderr
        assert "spec.custom.command" in result.stdout + result.stderr
    assert not marker.exists()


def test_values_are_whole_tokens() -> None:
    template = compile_command("srv --model '{{ model_path }}' --name={{ model_name | upper }} {{ worker }}")
    hostile = "/m o\"d'el\n--evil"
    argv = template.render({**SAMPLE_VARIABLES, "model_path": hostile, "model_name": "a b", "worker": "w 'x"})
    assert argv == ["srv", "--model", hostile, "--name=A B", "w 'x"]


def test_conditionals_and_defaults_are_allowed() -> None:
    template = compile_command("srv {% if gpus %}--gpus {{ gpus }}{% else %}--cpu{% endif %} -c {{ context | int }}")
    assert template.render({**SAMPLE_VARIABLES, "gpus": ""}) == ["srv", "--cpu", "-c", "8192"]
    assert template.render(SAMPLE_VARIABLES) == ["srv", "--gpus", "0", "-c", "8192"]


@given(st.text(max_size=200))
def test_any_text_either_compiles_or_is_refused_cleanly(text: str) -> None:
    try:
        argv = compile_command(text).render(SAMPLE_VARIABLES)
    except CommandTemplateError:
        return
    assert argv and all(isinstance(token, str) for token in argv)


@given(st.text(max_size=60))
def test_any_value_stays_one_token(value: str) -> None:
    argv = compile_command("srv {{ model_path }} --port={{ worker }}").render(
        {**SAMPLE_VARIABLES, "model_path": value, "worker": value}
    )
    assert argv == ["srv", value, f"--port={value}"]
